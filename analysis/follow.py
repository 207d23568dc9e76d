"""Analysis as a stream: re-analyze the recent window of a store while events land in it.

``LiveAnalysis`` only reads the store (and stores and publishes what it finds); it does not land
events. Whatever lands them tells it what landed and lends it the store's connection between
batches: ``fleetlog.follow`` wires it onto the ingester's own loop for ``fleetlog analyze
--follow``. Every ``every_s`` seconds, when something landed since, it re-analyzes the recent
window: ``lookback_s`` back from the watermark, the newest event time that every scrape source
still talking has reached (``watermark_us``; on the last turn, the newest event landed). Read up
to the newest event alone, the racks whose scrapes are still on their way look silent: on a
2,048-node stream at --speed 60 that made 3,932 false rack_power incidents in 30 simulated
minutes (512 racks, 11 times each; batch analysis of the same stream: none), with the watermark
none. Incidents it has not emitted yet are stored, published through its ``results`` sink when
it has one (``<prefix>.analysis``), and handed to ``on_incident``; so are the component actions
the remediation policy issues for them (``recommendation.issued``: what ``fleetlog act --follow``
carries out; the job-level actions, which fold every job's history, come from ``fleetlog
recommend``).

Latency, per emitted incident:
- ``event_lag_s``: the newest event time landed when the incident was emitted, minus its
  detection time — how much simulated/real time passed before the pipeline said it;
- ``wall_lag_s``: the wall clock at emission minus the detection time, only while the stream is
  live (``is_live``: its newest event time within ``LIVE_BEHIND_S`` behind the wall clock and
  ``LIVE_AHEAD_S`` ahead of it): a real cluster, or a simulation started now at ``--speed 1``.
  On a replay or a simulation of another day it would be the distance between two clocks (334
  days, on a simulated January read in December), so it is None and ``event_lag_s`` is the
  latency, in the stream's own time.

It also keeps the incidents it has seen (``tracked``: the latest version of each, whose end moves
while it goes on, with the severity of its stored version) and after each analysis publishes
them as ``snapshot``: what the alerts re-send and the metrics count as open. An incident is
dropped ``KEEP_RESOLVED_S`` of event time after it resolved (``analysis.severity.state``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import duckdb
import numpy as np

from fleetlog.analysis.context import US
from fleetlog.analysis.diagnosis import Incident
from fleetlog.analysis.incidents import incident_row, store_incidents, to_event
from fleetlog.analysis.metrics import AnalysisMetrics
from fleetlog.analysis.pipeline import analyze_store
from fleetlog.analysis.recommend import component_recommendations
from fleetlog.analysis.remediation import RemediationConfig
from fleetlog.analysis.report_data import fleet_goodput
from fleetlog.analysis.severity import RESOLVE_AFTER_S, assess, state
from fleetlog.ingest import contract as c
from fleetlog.ingest.contract import Sink
from fleetlog.ingest.store.sink import StoreSink

KEEP_RESOLVED_S: Final = 3600.0  # event time an incident stays tracked after it resolved
GOODPUT_EVERY_S: Final = 60.0  # wall time between two computations of the fleet's goodput
# Wall time a scrape source may stay quiet before the analysis stops waiting for it.
LATENESS_S: Final = 30.0
SCRAPES: Final = frozenset({"gpu.sampled", "port.sampled"})  # periodic: absence means something
# The running jobs' step reports are one periodic source too (a hang is their absence): when the
# jobs topic lands behind the scrapes, read alone up to the scrapes' time every job looks stuck
# (a 2,048-node stream on a loaded machine gave 35 false nccl_hang incidents in 30 minutes).
# One source for them all: a job that ends or hangs stops reporting, the others keep it current.
STEPS: Final = frozenset({"job.step_reported"})
JOB_STREAM: Final = "jobs"
# How far the newest event time may trail the wall clock for the stream to count as live: a
# collector or an ingester catching up (a backlog of an hour is already an outage of its own).
LIVE_BEHIND_S: Final = 3600.0
# ... and run ahead of it: clock skew between the hosts that stamp events and this one.
LIVE_AHEAD_S: Final = 300.0


def is_live(newest_us: int, wall_us: int) -> bool:
    """Whether a stream whose newest event time is ``newest_us`` runs on the wall clock (a
    replay, or a simulation of another time or at another speed, does not)."""
    return -LIVE_AHEAD_S * US <= wall_us - newest_us <= LIVE_BEHIND_S * US


@dataclass(frozen=True)
class Tracked:
    incident: Incident  # the latest version analysed
    severity: str  # of its stored version: stable for its whole life
    state: str  # "open" or "resolved", as of the snapshot's newest event time


@dataclass
class FollowStats:
    events: int = 0
    dead_letters: int = 0
    analyses: int = 0
    recommendations: int = 0  # component actions issued
    incidents: list[dict[str, Any]] = field(default_factory=list)
    event_lag_s: list[float] = field(default_factory=list)
    wall_lag_s: list[float] = field(default_factory=list)  # of the incidents emitted live
    analysis_s: list[float] = field(default_factory=list)
    stream_behind_wall_s: float | None = None  # wall clock - newest event time, last emission

    def summary(self) -> dict[str, Any]:
        def pct(values: list[float], q: float) -> float | None:
            return round(float(np.percentile(values, q)), 2) if values else None

        return {
            "events_landed": self.events,
            "dead_letters": self.dead_letters,
            "analyses": self.analyses,
            "incidents": len(self.incidents),
            "recommendations": self.recommendations,
            "event_lag_median_s": pct(self.event_lag_s, 50),
            "event_lag_p90_s": pct(self.event_lag_s, 90),
            "wall_lag_median_s": pct(self.wall_lag_s, 50),
            "wall_lag_p90_s": pct(self.wall_lag_s, 90),
            # Why the wall lag may be None: the stream ran on a clock of its own (``is_live``).
            "stream_behind_wall_s": self.stream_behind_wall_s,
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
        metrics: AnalysisMetrics | None = None, lateness_s: float = LATENESS_S,
        remediation: RemediationConfig | None = None, recommend: bool = True,
    ) -> None:
        self.every_s = every_s
        self.lookback_s = lookback_s
        self.results = results  # where new incidents are published, besides the store
        self.on_incident = on_incident
        self.stats = FollowStats()
        self.newest_us = 0
        # scrape source (a rack's GPUs, a switch's ports) -> (newest event time, when it landed)
        self.scraped: dict[str, tuple[int, float]] = {}
        self.lateness_s = lateness_s
        self.analysed_until_us = 0  # the end of the window the last analysis read
        self.dirty = False  # something landed since the last analysis
        self.last_analysis = time.monotonic()
        self._emitted: set[str] | None = None  # incident ids in the store, read once
        # Component actions are issued as their incidents are found (``fleetlog act --follow``
        # carries them out); the job actions fold every job's history, so they stay with
        # ``fleetlog recommend``.
        self.recommend = recommend
        self.remediation = remediation
        self._recommended: set[str] | None = None  # recommendation ids in the store, read once
        self.metrics = metrics
        self.tracked: dict[str, Incident] = {}
        self.severities: dict[str, str] = {}
        self.snapshot: tuple[Tracked, ...] = ()  # replaced whole after each analysis
        self.goodput: float | None = None
        self.interval_us = 10 * US  # the scrape interval the last analysis found
        self._goodput_at = float("-inf")

    def landed(self, events: Sequence[c.Envelope], new: int, dead_letters: int) -> None:
        """A batch landed: its decoded ``events`` (new or not), ``new`` of them new to the
        store, and ``dead_letters``."""
        self.stats.events += new
        self.stats.dead_letters += dead_letters
        now = time.monotonic()
        for event in events:
            self.newest_us = max(self.newest_us, event.time_us)
            source = (event.key if event.type in SCRAPES
                      else JOB_STREAM if event.type in STEPS else None)
            if source is not None:
                newest, _ = self.scraped.get(source, (0, now))
                self.scraped[source] = (max(newest, event.time_us), now)
        self.dirty = True

    def turn(self, con: duckdb.DuckDBPyConnection, *, last: bool = False) -> None:
        """Analyze if something landed and ``every_s`` passed since the last analysis (or, on
        the ``last`` turn, if anything landed since or the last analysis stopped short of the
        newest event: nothing more is on its way then, so it reads everything landed)."""
        if last and (self.dirty or self.analysed_until_us < self.newest_us):
            self._analyze(con, until_us=self.newest_us)
            self.last_analysis, self.dirty = time.monotonic(), False
        elif self.dirty and time.monotonic() - self.last_analysis >= self.every_s:
            self._analyze(con, until_us=self.watermark_us())
            self.last_analysis, self.dirty = time.monotonic(), False

    def _analyze(self, con: duckdb.DuckDBPyConnection, until_us: int) -> None:
        if self._emitted is None:
            self._emitted = {row[0] for row in con.execute("SELECT incident_id FROM incidents")
                             .fetchall()}
        emitted, stats, newest_us = self._emitted, self.stats, self.newest_us
        t0 = time.perf_counter()
        self.analysed_until_us = until_us
        since_us = until_us - int(self.lookback_s * US)
        result = analyze_store(con, since_us, until_us + 1)
        stats.analyses += 1
        stats.analysis_s.append(time.perf_counter() - t0)
        self.interval_us = result.interval_us
        fresh: list[Incident] = [i for i in result.incidents if i.incident_id not in emitted]
        if fresh:
            store_incidents(con, fresh)
            if self.recommend:
                self._issue_recommendations(con)
        self._track(con, result.incidents)
        if self.metrics is not None:
            self.metrics.analysed(stats.analysis_s[-1])
            if time.monotonic() - self._goodput_at >= GOODPUT_EVERY_S:
                self.goodput = fleet_goodput(con, since_us, until_us + 1)
                self._goodput_at = time.monotonic()
        if fresh:
            self._emit(fresh)
        if self.metrics is not None:
            open_by: dict[tuple[str, str], int] = {}
            for t in self.snapshot:
                if t.state == "open":
                    key = (t.incident.category, t.severity)
                    open_by[key] = open_by.get(key, 0) + 1
            self.metrics.state(open_by, self.goodput, newest_us / US)

    def _issue_recommendations(self, con: duckdb.DuckDBPyConnection) -> None:
        """Store and publish the component actions not issued yet (the policy's fold over every
        stored incident: its ids are deterministic, so only the new incidents' actions are new)."""
        if self._recommended is None:
            self._recommended = {row[0] for row in con.execute(
                "SELECT event_id FROM event_log WHERE type = 'recommendation.issued'").fetchall()}
        new = [event for event, _row in component_recommendations(con, self.remediation)
               if event.id not in self._recommended]
        if not new:
            return
        sink = StoreSink.sharing(con)
        try:
            sink.write(new)
        finally:
            sink.close()
        if self.results is not None:
            self.results.write(new)
        self._recommended.update(event.id for event in new)
        self.stats.recommendations += len(new)

    def watermark_us(self) -> int:
        """How far the analysis reads: the newest event time every scrape source still talking
        has reached. Sources land unevenly (partitions, a consumer behind): read up to the
        newest event alone, the racks whose scrapes are still on their way look silent, like
        racks that lost power. A source that landed nothing for ``lateness_s`` of wall time no
        longer holds the mark back: it may really be dead, and the detectors must see it stop."""
        now = time.monotonic()
        live = [newest for newest, landed in self.scraped.values()
                if now - landed <= self.lateness_s]
        return min(live) if live else self.newest_us

    def _track(self, con: duckdb.DuckDBPyConnection, seen: Sequence[Incident]) -> None:
        """Keep the latest version of each incident seen, and its stored severity."""
        for incident in seen:
            self.tracked[incident.incident_id] = incident
        missing = [i for i in self.tracked if i not in self.severities]
        if missing:
            self.severities.update(
                {i: level for i, (level, _impact) in assess(con, missing).items()})
        snapshot = []
        for incident_id, incident in list(self.tracked.items()):
            now = state(incident.end_us, incident.start_us, self.newest_us)
            if now == "resolved" and (self.newest_us - incident.end_us
                                      > (KEEP_RESOLVED_S + RESOLVE_AFTER_S) * US):
                del self.tracked[incident_id]
                continue
            snapshot.append(Tracked(incident, self.severities.get(incident_id, "info"), now))
        self.snapshot = tuple(snapshot)

    def _emit(self, fresh: Sequence[Incident]) -> None:
        assert self._emitted is not None
        stats, newest_us = self.stats, self.newest_us
        wall_us = time.time_ns() // 1000
        live = is_live(newest_us, wall_us)
        stats.stream_behind_wall_s = round((wall_us - newest_us) / US, 3)
        if self.results is not None:
            self.results.write([to_event(incident) for incident in fresh])
        for incident in fresh:
            self._emitted.add(incident.incident_id)
            row = incident_row(incident)
            row["severity"] = self.severities.get(incident.incident_id, "info")
            row["event_lag_s"] = round((newest_us - incident.detect_us) / US, 3)
            row["wall_lag_s"] = round((wall_us - incident.detect_us) / US, 3) if live else None
            stats.event_lag_s.append(row["event_lag_s"])
            if live:
                stats.wall_lag_s.append(row["wall_lag_s"])
            stats.incidents.append(row)
            if self.metrics is not None:
                self.metrics.opened(incident.category, row["severity"], row["wall_lag_s"],
                                    row["event_lag_s"])
            if self.on_incident is not None:
                self.on_incident(row)
