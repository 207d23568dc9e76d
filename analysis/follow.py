"""Analysis as a stream: re-analyze the recent window of a store while events land in it.

``LiveAnalysis`` only reads the store (and stores and publishes what it finds); it does not land
events. Whatever lands them tells it what landed and lends it the store's connection between
batches: ``fleetlog.follow`` wires it onto the ingester's own loop for ``fleetlog analyze
--follow``. Every ``every_s`` seconds, when something landed since, it re-analyzes the recent
window (``lookback_s`` back from the newest event landed). Incidents it has not emitted yet are
stored, published through its ``results`` sink when it has one (``<prefix>.analysis``), and
handed to ``on_incident``.

Latency, per emitted incident:
- ``event_lag_s``: the newest event time landed when the incident was emitted, minus its
  detection time — how much simulated/real time passed before the pipeline said it;
- ``wall_lag_s``: the wall clock at emission minus the detection time — meaningful when the
  source runs at wall-clock speed (``fleetlog simulate --speed 1``) or is a real cluster.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb
import numpy as np

from fleetlog.analysis.context import US
from fleetlog.analysis.diagnosis import Incident
from fleetlog.analysis.incidents import incident_row, store_incidents, to_event
from fleetlog.analysis.pipeline import analyze_store
from fleetlog.ingest import contract as c
from fleetlog.ingest.contract import Sink


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


class LiveAnalysis:
    """Told what landed (``landed``) and given the store between batches (``turn``), it
    re-analyzes the recent window when due and emits the incidents that are new."""

    def __init__(
        self, *, every_s: float = 5.0, lookback_s: float = 2 * 3600,
        results: Sink | None = None,
        on_incident: Callable[[dict[str, Any]], Any] | None = None,
    ) -> None:
        self.every_s = every_s
        self.lookback_s = lookback_s
        self.results = results  # where new incidents are published, besides the store
        self.on_incident = on_incident
        self.stats = FollowStats()
        self.newest_us = 0
        self.dirty = False  # something landed since the last analysis
        self.last_analysis = time.monotonic()
        self._emitted: set[str] | None = None  # incident ids in the store, read once

    def landed(self, events: Sequence[c.Envelope], new: int, dead_letters: int) -> None:
        """A batch landed: its decoded ``events`` (new or not), ``new`` of them new to the
        store, and ``dead_letters``."""
        self.stats.events += new
        self.stats.dead_letters += dead_letters
        for event in events:
            self.newest_us = max(self.newest_us, event.time_us)
        self.dirty = True

    def turn(self, con: duckdb.DuckDBPyConnection, *, last: bool = False) -> None:
        """Analyze if something landed and ``every_s`` passed since the last analysis (or, on
        the ``last`` turn, if anything landed since)."""
        if self.dirty and (last or time.monotonic() - self.last_analysis >= self.every_s):
            self._analyze(con)
            self.last_analysis, self.dirty = time.monotonic(), False

    def _analyze(self, con: duckdb.DuckDBPyConnection) -> None:
        if self._emitted is None:
            self._emitted = {row[0] for row in con.execute("SELECT incident_id FROM incidents")
                             .fetchall()}
        emitted, stats, newest_us = self._emitted, self.stats, self.newest_us
        t0 = time.perf_counter()
        result = analyze_store(con, newest_us - int(self.lookback_s * US), newest_us + 1)
        stats.analyses += 1
        stats.analysis_s.append(time.perf_counter() - t0)
        fresh: list[Incident] = [i for i in result.incidents if i.incident_id not in emitted]
        if not fresh:
            return
        store_incidents(con, fresh)
        wall_us = time.time_ns() // 1000
        if self.results is not None:
            self.results.write([to_event(incident) for incident in fresh])
        for incident in fresh:
            emitted.add(incident.incident_id)
            row = incident_row(incident)
            row["event_lag_s"] = round((newest_us - incident.detect_us) / US, 3)
            row["wall_lag_s"] = round((wall_us - incident.detect_us) / US, 3)
            stats.event_lag_s.append(row["event_lag_s"])
            stats.wall_lag_s.append(row["wall_lag_s"])
            stats.incidents.append(row)
            if self.on_incident is not None:
                self.on_incident(row)
