"""Incidents as events: ``incident.opened`` written to the store (the ``incidents`` view) and, when
a broker is given, published on ``<prefix>.analysis``. Both go through the kernel's one ``Sink``
(``StoreSink``, ``KafkaSink``), as every other stage's events do.

The event id is the incident id (a hash of category, root entity and first symptom), so running
the analysis twice over the same data stores nothing new: the writer skips ids it already has.
The event time is the detection time (when the rule could first fire), which evaluation and
``explain`` read back as ``incidents_raw.ts``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import duckdb

from fleetlog.analysis.context import ANALYSIS_MEMORY_LIMIT
from fleetlog.analysis.diagnosis import Incident
from fleetlog.ingest import contract as c
from fleetlog.ingest.contract import Sink
from fleetlog.ingest.contract.errors import FleetlogError
from fleetlog.ingest.kafka.settings import KafkaSettings
from fleetlog.ingest.kafka.sink import KafkaSink
from fleetlog.ingest.store.sink import StoreSink

SOURCE: Final = "fleetlog-analysis"
MAX_EVIDENCE: Final = 200


class AnalysisError(FleetlogError):
    """The analysis cannot run as asked; the message says what to do."""


def to_event(incident: Incident) -> c.Envelope:
    evidence: list[str] = []
    for finding in sorted(incident.findings, key=lambda f: (f.onset_us, f.kind)):
        for event_id in finding.evidence:
            if event_id and event_id not in evidence:
                evidence.append(event_id)
    payload = c.IncidentOpened(
        incident_id=incident.incident_id, start_us=incident.start_us, end_us=incident.end_us,
        category=incident.category, root_entity=incident.root,
        confidence=round(incident.confidence, 4),
        candidates=[c.Candidate(category=cat, entity=ent, score=score)
                    for cat, ent, score in incident.candidates[:5]],
        evidence=evidence[:MAX_EVIDENCE],
    )
    return c.make_event(payload, time_us=incident.detect_us, source=SOURCE,
                        id=incident.incident_id)


def store_incidents(con: duckdb.DuckDBPyConnection, incidents: Sequence[Incident]) -> int:
    """Write ``incident.opened`` events to the store behind ``con`` (the kernel's ``StoreSink``,
    sharing the connection: it stays open); returns how many were new."""
    if not incidents:
        return 0
    return _emit(StoreSink.sharing(con), incidents)


def publish_incidents(
    settings: KafkaSettings, incidents: Sequence[Incident], topic_prefix: str | None = None
) -> int:
    """Publish ``incident.opened`` events on ``<prefix>.analysis`` (the kernel's
    ``KafkaSink``); returns how many were sent."""
    if not incidents:
        return 0
    return _emit(KafkaSink(settings, topic_prefix=topic_prefix), incidents)


def _emit(sink: Sink, incidents: Sequence[Incident]) -> int:
    try:
        sink.write([to_event(i) for i in incidents])
    finally:
        sink.close()
    return sink.totals.events


def incident_row(incident: Incident) -> dict[str, Any]:
    """The incident as a plain mapping (what `fleetlog analyze` prints)."""
    return {
        "incident_id": incident.incident_id,
        "category": incident.category,
        "root_entity": incident.root,
        "confidence": round(incident.confidence, 3),
        "start_ts": _iso(incident.start_us),
        "detected_ts": _iso(incident.detect_us),
        "end_ts": _iso(incident.end_us),
        "candidates": [{"category": cat, "entity": ent, "score": score}
                       for cat, ent, score in incident.candidates[:3]],
        "signals": sorted({f.kind for f in incident.findings}),
        "affected": len(incident.affected),
    }


def _iso(us: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(us / 1e6, tz=UTC).isoformat().replace("+00:00", "Z")


def list_incidents(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """The stored incidents (``incidents`` view), oldest first."""
    rows = con.execute(
        "SELECT incident_id, category, root_entity, confidence, start_ts, end_ts, candidates, "
        "len(evidence) FROM incidents ORDER BY start_ts, incident_id"
    ).fetchall()
    out = []
    for incident_id, category, root, confidence, start, end, candidates, n_evidence in rows:
        ranked = json.loads(candidates) if isinstance(candidates, str) else candidates
        out.append({
            "incident_id": incident_id, "category": category, "root_entity": root,
            "confidence": round(float(confidence), 3), "start_ts": start, "end_ts": end,
            "candidates": ranked[:3] if isinstance(ranked, list) else ranked,
            "evidence_events": int(n_evidence),
        })
    return out


def open_for_results(paths: Sequence[str | Path], write: bool) -> duckdb.DuckDBPyConnection:
    """A connection that reads every given store and, when ``write``, can store incidents
    (only for a single store file: shards are read together, but results need one home)."""
    from fleetlog.ingest.store import open_store, open_union, store_files

    files = store_files(paths)
    if not write:
        return open_union(files, memory_limit=ANALYSIS_MEMORY_LIMIT)
    if len(files) != 1:
        raise AnalysisError(
            f"{len(files)} store files given: incidents can be stored in one only; "
            "pass --no-write to analyze shards together without storing"
        )
    con = open_store(files[0])
    con.execute(f"SET memory_limit = '{ANALYSIS_MEMORY_LIMIT}'")
    return con
