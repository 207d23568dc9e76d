"""Recommendations from stored incidents: the component action for each, as events.

Each incident becomes a ``Failure`` for the remediation policy (``analysis.remediation``):
NVIDIA's catalog action where an XID names one, the category's action otherwise, escalated on
recurrence and capped by the circuit breaker. The result is stored as ``recommendation.issued``
events (deterministic ids: a re-run adds nothing) and shown in the ``recommendations`` view.

Job-level actions (target ``job:<id>``: restart from the last checkpoint on spares leaving the
suspect nodes out, or migrate to another virtual cluster when the job's own lacks healthy nodes,
checkpoint now on a precursor, Daly's checkpoint interval) come from ``analysis.job_actions``,
with its documented estimate of the GPU-hours saved. Component actions store 0 GPU-hours saved
(not estimated).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb

from fleetlog.analysis.evidence import hardware_evidence
from fleetlog.analysis.job_actions import job_actions
from fleetlog.analysis.remediation import Failure, RemediationConfig, plan
from fleetlog.ingest import contract as c
from fleetlog.ingest.kafka.settings import KafkaSettings
from fleetlog.ingest.kafka.sink import KafkaSink
from fleetlog.ingest.store import open_store, store_files
from fleetlog.ingest.store.sink import StoreSink

_GPU_CATEGORIES = ("gpu_hw", "gpu_hbm", "gpu_sram", "gpu_gsp")
SOURCE = "fleetlog-recommend"  # the events' source: ids stay those of earlier runs


def _node_of(entity: str) -> str | None:
    kind, _, rest = entity.partition(":")
    if kind in ("gpu", "nic", "node"):
        return rest.split("/", 1)[0]
    return None


def component_recommendations(
    con: duckdb.DuckDBPyConnection, config: RemediationConfig | None = None,
) -> list[tuple[c.Envelope, dict[str, Any]]]:
    """The component actions for every stored incident (the remediation policy's fold over
    them, in time order), as events with their rows. Cheap: SQL over the incidents, so
    ``analyze --follow`` runs it after each analysis that found something new."""
    racks = dict(con.execute("SELECT node, rack FROM nodes").fetchall())
    fleet_nodes = max(1, len(racks))
    incidents = con.execute(
        "SELECT incident_id, epoch_us(start_ts), category, root_entity, evidence "
        "FROM incidents ORDER BY start_ts, incident_id").fetchall()
    # The first fatal XID among the incident's own evidence names NVIDIA's action (an HBM
    # incident's XID comes long after its first symptom, the rising ECC counters); without
    # one, the category decides.
    xids = dict(con.execute(
        "SELECT i.incident_id, arg_min(x.xid, x.ts) FROM "
        "(SELECT incident_id, unnest(evidence) AS event_id FROM incidents) i "
        "JOIN xid_events x USING (event_id) WHERE x.fatal GROUP BY i.incident_id").fetchall())
    hardware = hardware_evidence(con, ((i, cat, ev or ()) for i, _s, cat, _r, ev in incidents))
    by_failure: dict[Failure, str] = {}
    for incident_id, start_us, category, root, _evidence in incidents:
        node = _node_of(root)
        xid = xids.get(incident_id) if category in _GPU_CATEGORIES else None
        failure = Failure(ts=start_us / 1e6, category=category, entity=root, node=node,
                          rack=racks.get(node) if node else None, xid=xid,
                          hardware=bool(hardware.get(incident_id)))
        by_failure[failure] = incident_id
    actions = plan(by_failure, fleet_nodes=fleet_nodes, config=config)
    owner = {f.ts: i for f, i in by_failure.items()}
    out = []
    for action in actions:
        incident_id = owner.get(action.ts, "")
        payload = c.RecommendationIssued(
            incident_id=incident_id, target=action.target, action=action.action,
            reason=action.reason, gpu_hours_saved=0.0)
        event = c.make_event(payload, time_us=int(action.ts * 1e6), source=SOURCE)
        out.append((event, {"id": event.id, "incident_id": incident_id,
                            "ts_us": int(action.ts * 1e6), "target": action.target,
                            "action": action.action, "catalog_action": action.catalog_action,
                            "reason": action.reason, "gpu_hours_saved": 0.0, "after": None}))
    return out


def recommend(
    paths: Sequence[str | Path], *, config: RemediationConfig | None = None, write: bool = True,
    watchdog_s: float = 1800.0, publish_to: KafkaSettings | None = None,
    topic_prefix: str | None = None,
) -> list[dict[str, Any]]:
    """The recommendations for the stored incidents, as rows; stored with ``write`` and, with
    ``publish_to``, published on ``<prefix>.analysis`` (where ``fleetlog act --follow`` takes
    them) through the kernel's ``KafkaSink``."""
    files = store_files(paths)
    con = open_store(files[0], read_only=not write)
    try:
        issued_components = component_recommendations(con, config)
        events = [event for event, _row in issued_components]
        rows = [row for _event, row in issued_components]
        issued: dict[tuple[str, str, str], str] = {}  # (incident, target, action) -> event id
        for job_action in job_actions(con, watchdog_s=watchdog_s):
            ts_us = job_action.ts_us
            after = None if job_action.after is None else issued.get(
                (job_action.incident_id, job_action.target, job_action.after))
            event = c.make_event(c.RecommendationIssued(
                incident_id=job_action.incident_id, target=job_action.target,
                action=job_action.action, reason=job_action.reason,
                gpu_hours_saved=job_action.gpu_hours_saved, after=after), time_us=ts_us,
                source=SOURCE)
            issued[(job_action.incident_id, job_action.target, job_action.action)] = event.id
            events.append(event)
            rows.append({"id": event.id, "incident_id": job_action.incident_id, "ts_us": ts_us,
                         "target": job_action.target, "action": job_action.action,
                         "catalog_action": None, "reason": job_action.reason,
                         "gpu_hours_saved": job_action.gpu_hours_saved, "after": after})
        if write and events:
            sink = StoreSink.sharing(con)  # the analysis results' one sink
            sink.write(events)
            sink.close()
        if publish_to is not None and events:
            published = KafkaSink(publish_to, topic_prefix=topic_prefix)
            try:
                published.write(events)
            finally:
                published.close()
        return rows
    finally:
        con.close()
