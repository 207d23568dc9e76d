"""The ingester's Prometheus metrics, read from its running ``IngestStats`` at each scrape.

The loop already keeps every count (``IngestStats``: landed, duplicates, dead letters, batches,
rows per raw table, lag per partition, refreshed every half second by its progress callback), so
the metrics are a view of it rather than a second set of counters to keep in step: ``update``
hands over the latest stats, the collector reads them when Prometheus scrapes.

| metric | type | labels | what |
|---|---|---|---|
| ``fleetlog_events_landed_total`` | counter | | events new to the store |
| ``fleetlog_rows_landed_total`` | counter | ``table`` | rows per raw table (one per event family; a ``gpu.sampled`` lands a row per GPU) |
| ``fleetlog_duplicates_skipped_total`` | counter | | events already stored (redelivered) |
| ``fleetlog_dead_letters_total`` | counter | | messages that could not become events |
| ``fleetlog_ingest_batches_total`` | counter | | DuckDB transactions committed |
| ``fleetlog_consumer_lag_records`` | gauge | ``topic``, ``partition`` | records behind the partition's end |
"""  # noqa: E501

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from fleetlog.ingest.contract.metrics import serve_metrics
from fleetlog.ingest.pipeline import IngestStats


class IngestMetrics(Collector):
    """Register with ``IngestMetrics(registry)``; pass ``update`` as the ingester's progress."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.stats: IngestStats | None = None
        self.url: str | None = None  # where it is served, when it is
        self.registry = registry
        registry.register(self)

    def update(self, stats: IngestStats) -> None:
        self.stats = stats

    def also(self, progress: Callable[[IngestStats], None]) -> Callable[[IngestStats], None]:
        """A progress callback that updates these metrics and calls ``progress``."""
        def both(stats: IngestStats) -> None:
            self.stats = stats
            progress(stats)
        return both

    @classmethod
    @contextlib.contextmanager
    def serving(cls, address: str | None) -> Iterator[IngestMetrics]:
        """Metrics in a registry of their own, served on ``address`` (``[HOST:]PORT``) while
        the block runs; with None, kept but not served."""
        metrics = cls(CollectorRegistry())
        if address is None:
            yield metrics
            return
        server = serve_metrics(metrics.registry, address)
        metrics.url = server.url
        try:
            yield metrics
        finally:
            server.close()

    def collect(self) -> Iterator[Metric]:
        stats = self.stats
        events = CounterMetricFamily("fleetlog_events_landed", "Events new to the store.")
        rows = CounterMetricFamily("fleetlog_rows_landed", "Rows landed per raw table.",
                                   labels=["table"])
        duplicates = CounterMetricFamily("fleetlog_duplicates_skipped",
                                         "Events skipped: already stored.")
        dead = CounterMetricFamily("fleetlog_dead_letters",
                                   "Messages that could not become events.")
        batches = CounterMetricFamily("fleetlog_ingest_batches",
                                      "DuckDB transactions committed.")
        lag = GaugeMetricFamily("fleetlog_consumer_lag_records",
                                "Records behind the end of the partition.",
                                labels=["topic", "partition"])
        if stats is not None:
            events.add_metric([], stats.events)
            for table, count in sorted(stats.rows.items()):
                rows.add_metric([table], count)
            duplicates.add_metric([], stats.duplicates)
            dead.add_metric([], stats.dead_letters)
            batches.add_metric([], stats.batches)
            for name, records in sorted(stats.lag.items()):
                topic, _, partition = name.rstrip("]").rpartition("[")
                if records is not None:
                    lag.add_metric([topic, partition], records)
        yield from (events, rows, duplicates, dead, batches, lag)
