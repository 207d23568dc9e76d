"""The live analysis's Prometheus metrics (``analyze --follow``), in a registry of its own.

| metric | type | labels | what |
|---|---|---|---|
| ``fleetlog_incidents_open`` | gauge | ``category``, ``severity`` | incidents open as of the newest event time (``analysis.severity``) |
| ``fleetlog_incidents_opened_total`` | counter | ``category``, ``severity`` | incidents emitted |
| ``fleetlog_detection_latency_seconds`` | histogram | | wall clock at emission − event time of the decisive evidence (the detection time): the latency a person sees, observed only while the source is live (a replay or a simulation of another time has no wall-clock latency) |
| ``fleetlog_detection_event_lag_seconds`` | histogram | | newest event time landed at emission − detection time: the same in the stream's own time (replays, simulations at any speed) |
| ``fleetlog_fleet_goodput_ettr`` | gauge | | the fleet's ETTR over the analysis's recent window (``report_data.fleet_goodput``) |
| ``fleetlog_analyses_total`` | counter | | analyses of the recent window run |
| ``fleetlog_analysis_duration_seconds`` | histogram | | how long one took |
| ``fleetlog_newest_event_time_seconds`` | gauge | | the newest event time landed (Unix seconds) |
"""  # noqa: E501

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# seconds: from a scrape interval to an hour (a slow detector on a long window)
LATENCY_BUCKETS = (1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1200, 3600)


class AnalysisMetrics(Collector):
    """The metrics ``LiveAnalysis`` feeds: ``opened`` per incident emitted, ``analysed`` per
    analysis, ``state`` with the open incidents and the goodput after each analysis."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._open: Mapping[tuple[str, str], int] = {}
        self._goodput: float | None = None
        self._newest_s: float | None = None
        self.opened_total = Counter("fleetlog_incidents_opened", "Incidents emitted.",
                                    ["category", "severity"], registry=registry)
        self.latency = Histogram(
            "fleetlog_detection_latency_seconds",
            "Wall clock at emission minus the event time of the decisive evidence.",
            buckets=LATENCY_BUCKETS, registry=registry)
        self.event_lag = Histogram(
            "fleetlog_detection_event_lag_seconds",
            "Newest event time landed at emission minus the detection time.",
            buckets=LATENCY_BUCKETS, registry=registry)
        self.analyses = Counter("fleetlog_analyses", "Analyses of the recent window run.",
                                registry=registry)
        self.analysis_s = Histogram("fleetlog_analysis_duration_seconds",
                                    "Duration of one analysis of the recent window.",
                                    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
                                    registry=registry)
        registry.register(self)

    def opened(self, category: str, severity: str, wall_lag_s: float | None,
               event_lag_s: float) -> None:
        """``wall_lag_s`` is None when the stream is not live (``analysis.follow.is_live``)."""
        self.opened_total.labels(category, severity).inc()
        if wall_lag_s is not None:
            self.latency.observe(max(0.0, wall_lag_s))
        self.event_lag.observe(max(0.0, event_lag_s))

    def analysed(self, seconds: float) -> None:
        self.analyses.inc()
        self.analysis_s.observe(seconds)

    def state(self, open_by: Mapping[tuple[str, str], int], goodput: float | None,
              newest_s: float) -> None:
        """Replace the open incidents ((category, severity) -> count) and the goodput: read
        whole at the next scrape (one assignment each, so a scrape never sees half)."""
        self._open, self._goodput, self._newest_s = dict(open_by), goodput, newest_s

    def collect(self) -> Iterator[Metric]:
        open_now = GaugeMetricFamily("fleetlog_incidents_open",
                                     "Incidents open as of the newest event time.",
                                     labels=["category", "severity"])
        for (category, severity), count in sorted(self._open.items()):
            open_now.add_metric([category, severity], count)
        goodput = GaugeMetricFamily("fleetlog_fleet_goodput_ettr",
                                    "The fleet's ETTR over the recent window.")
        if self._goodput is not None:
            goodput.add_metric([], self._goodput)
        newest = GaugeMetricFamily("fleetlog_newest_event_time_seconds",
                                   "The newest event time landed (Unix seconds).")
        if self._newest_s is not None:
            newest.add_metric([], self._newest_s)
        yield from (open_now, goodput, newest)
