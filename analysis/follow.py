"""``fleetlog analyze --follow``: analysis as a stream, with its own copy of the events.

An ingester holds its DuckDB file's write lock while it runs, so a live analysis cannot read that
file. Follow mode therefore consumes the pipeline's topics itself (its own consumer group; never
the truth topic), lands them in its own store through the shared writer (offsets in the same
transaction, so a restart resumes exactly), and every ``every_s`` seconds re-analyzes the recent
window (``lookback_s``). Incidents it has not emitted yet are stored and published on
``<prefix>.analysis``.

Latency, per emitted incident:
- ``event_lag_s``: the newest event time landed when the incident was emitted, minus its
  detection time — how much simulated/real time passed before the pipeline said it;
- ``wall_lag_s``: the wall clock at emission minus the detection time — meaningful when the
  source runs at wall-clock speed (``fleetlog simulate --speed 1``) or is a real cluster.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fleetlog.analysis.context import US
from fleetlog.analysis.diagnosis import Incident
from fleetlog.analysis.incidents import incident_row, store_incidents, to_event
from fleetlog.analysis.pipeline import analyze_store
from fleetlog.ingest import contract as c
from fleetlog.ingest.kafka.settings import KafkaSettings

FAMILIES = ("inventory", "gpu", "net", "host", "jobs")  # never "truth"


@dataclass
class FollowStats:
    events: int = 0
    dead_letters: int = 0
    analyses: int = 0
    incidents: list[dict[str, Any]] = field(default_factory=list)
    event_lag_s: list[float] = field(default_factory=list)
    wall_lag_s: list[float] = field(default_factory=list)
    analysis_s: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        def pct(values: list[float], q: float) -> float | None:
            return round(float(np.percentile(values, q)), 2) if values else None

        return {
            "events_landed": self.events,
            "dead_letters": self.dead_letters,
            "analyses": self.analyses,
            "incidents": len(self.incidents),
            "event_lag_median_s": pct(self.event_lag_s, 50),
            "event_lag_p90_s": pct(self.event_lag_s, 90),
            "wall_lag_median_s": pct(self.wall_lag_s, 50),
            "wall_lag_p90_s": pct(self.wall_lag_s, 90),
            "analysis_median_s": pct(self.analysis_s, 50),
            "opened": self.incidents[:50],
        }


def follow(
    db: Path, settings: KafkaSettings, *, topic_prefix: str | None = None,
    group: str | None = None, every_s: float = 5.0, lookback_s: float = 2 * 3600,
    max_seconds: float | None = None, idle_exit_s: float | None = None, publish: bool = True,
    on_incident: Callable[[dict[str, Any]], Any] | None = None,
) -> FollowStats:
    from fleetlog.ingest.contract import DeadLetter
    from fleetlog.ingest.kafka.consumer import KafkaSource
    from fleetlog.ingest.kafka.producer import Publisher
    from fleetlog.ingest.store.writer import open_writer

    prefix = topic_prefix or settings.topic_prefix
    writer = open_writer(db)
    stored = writer.stored_offsets()
    emitted = {row[0] for row in writer.con.execute("SELECT incident_id FROM incidents")
               .fetchall()}
    source = KafkaSource(
        settings, [c.topic_name(f, prefix) for f in FAMILIES],
        group or f"{prefix}-analyze-{db.stem}",
        positions=lambda tps: {tp: stored[tp] for tp in tps if tp in stored},
    )
    publisher = Publisher(settings, topic_prefix=prefix) if publish else None
    stats = FollowStats()
    started = last_data = last_analysis = time.monotonic()
    newest_us = 0
    dirty = False
    try:
        while True:
            polled = source.poll(0.5)
            events: list[c.Envelope] = []
            dead: list[DeadLetter] = []
            offsets: dict[tuple[str, int], int] = {}
            for tp, records in polled.records:
                for record in records:
                    decoded = c.decode(record.value)
                    if isinstance(decoded, c.Envelope):
                        events.append(decoded)
                        newest_us = max(newest_us, decoded.time_us)
                    else:
                        dead.append(DeadLetter.from_failure(
                            decoded, origin=tp[0], raw=record.value, partition=tp[1],
                            offset=record.offset))
                offsets[tp] = records[-1].offset + 1
            if events or dead:
                result = writer.write_batch(events, dead, offsets)
                stored.update(offsets)
                source.commit(offsets)
                stats.events += result.events
                stats.dead_letters += result.dead_letters
                last_data = time.monotonic()
                dirty = True
            now = time.monotonic()
            if dirty and now - last_analysis >= every_s:
                _analyze(writer.con, newest_us, lookback_s, emitted, stats, publisher,
                         on_incident)
                last_analysis, dirty = time.monotonic(), False
            if max_seconds is not None and now - started >= max_seconds:
                break
            if idle_exit_s is not None and now - last_data >= idle_exit_s and not dirty:
                break
        if dirty:
            _analyze(writer.con, newest_us, lookback_s, emitted, stats, publisher, on_incident)
    finally:
        source.close()
        if publisher is not None:
            publisher.close()
        writer.close()
    return stats


def _analyze(
    con: Any, newest_us: int, lookback_s: float, emitted: set[str], stats: FollowStats,
    publisher: Any, on_incident: Callable[[dict[str, Any]], Any] | None,
) -> None:
    t0 = time.perf_counter()
    result = analyze_store(con, newest_us - int(lookback_s * US), newest_us + 1)
    stats.analyses += 1
    stats.analysis_s.append(time.perf_counter() - t0)
    fresh: list[Incident] = [i for i in result.incidents if i.incident_id not in emitted]
    if not fresh:
        return
    store_incidents(con, fresh)
    wall_us = time.time_ns() // 1000
    for incident in fresh:
        emitted.add(incident.incident_id)
        if publisher is not None:
            publisher.send(to_event(incident))
        row = incident_row(incident)
        row["event_lag_s"] = round((newest_us - incident.detect_us) / US, 3)
        row["wall_lag_s"] = round((wall_us - incident.detect_us) / US, 3)
        stats.event_lag_s.append(row["event_lag_s"])
        stats.wall_lag_s.append(row["wall_lag_s"])
        stats.incidents.append(row)
        if on_incident is not None:
            on_incident(row)
    if publisher is not None:
        publisher.flush()
