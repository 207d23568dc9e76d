"""``fleetlog analyze --follow``: the ingester's own loop, with live analysis riding on it.

An ingester holds its DuckDB file's write lock while it runs, so a live analysis cannot read that
file. Follow mode therefore lands the pipeline's topics in a store of its own, with the
ingester's loop (``ingest_kafka``: its own consumer group, never the truth topic; offsets in the
same transaction as the rows, so a restart resumes exactly), and between batches lends that store
to ``analysis.follow.LiveAnalysis``, which re-analyzes the recent window every ``every_s``
seconds and emits the incidents it has not emitted yet: stored, and published on
``<prefix>.analysis`` through the kernel's ``KafkaSink``.

With ``metrics_address`` it serves ``/metrics`` (the ingester's metrics and the analysis's, in
one registry of its own); with ``alertmanager`` it keeps Alertmanager told of every incident it
tracks (``act.alerts.AlertPusher``: re-sent while open, resolved when it ends), from a thread of
its own so a slow or absent Alertmanager never holds up the loop.

It wires stages (ingestion, analysis, alerts) together, so it lives here on the top floor, not in
any: analysis only reads the store and ingestion knows nothing of analysis.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from fleetlog.act.alerts import AlertPusher, build_alerts
from fleetlog.analysis.follow import FollowStats, LiveAnalysis
from fleetlog.analysis.metrics import AnalysisMetrics
from fleetlog.analysis.remediation import RemediationConfig
from fleetlog.ingest import contract as c
from fleetlog.ingest.contract.metrics import MetricsServer, serve_metrics
from fleetlog.ingest.ingester import KafkaIngest, ingest_kafka
from fleetlog.ingest.kafka.settings import KafkaSettings
from fleetlog.ingest.kafka.sink import KafkaSink
from fleetlog.ingest.metrics import IngestMetrics
from fleetlog.ingest.pipeline import Batch
from fleetlog.ingest.store.writer import BatchResult, StoreWriter

FAMILIES = ("inventory", "gpu", "net", "host", "jobs")  # never "truth" (nor our own "analysis")


def follow(
    db: Path, settings: KafkaSettings, *, topic_prefix: str | None = None,
    group: str | None = None, every_s: float = 5.0, lookback_s: float = 2 * 3600,
    max_seconds: float | None = None, idle_exit_s: float | None = None, publish: bool = True,
    on_incident: Callable[[dict[str, Any]], Any] | None = None,
    metrics_address: str | None = None, alertmanager: str | None = None,
    on_notice: Callable[[str], Any] | None = None, remediation: RemediationConfig | None = None,
) -> FollowStats:
    """Land the topics in ``db`` and analyze as they land, until ``max_seconds`` have passed,
    nothing new arrived for ``idle_exit_s`` (once caught up), or Ctrl-C; a last analysis then
    covers whatever landed since the one before. ``on_notice`` hears one-line notices (where
    /metrics is served, an Alertmanager that cannot be reached)."""
    db = Path(db)
    prefix = topic_prefix or settings.topic_prefix
    job = KafkaIngest(
        db=db, topics=[c.topic_name(f, prefix) for f in FAMILIES],
        group=group or f"{prefix}-analyze-{db.stem}", until_idle_s=idle_exit_s,
        memory_limit=None,  # analysis reads through this connection: DuckDB's default limit
    )
    registry = CollectorRegistry()
    ingest_metrics = IngestMetrics(registry)
    live = LiveAnalysis(every_s=every_s, lookback_s=lookback_s, on_incident=on_incident,
                        metrics=AnalysisMetrics(registry), remediation=remediation)
    stop = threading.Event()
    started = time.monotonic()
    server: MetricsServer | None = None
    pusher = (AlertPusher(alertmanager, on_error=on_notice).start() if alertmanager is not None
              else None)
    analysed = 0

    def between_batches(writer: StoreWriter, landed: Sequence[tuple[Batch, BatchResult]],
                        last: bool) -> None:
        nonlocal analysed
        if publish and live.results is None:  # once the consumer has reached the broker
            live.results = KafkaSink(settings, topic_prefix=prefix, deliver_each_write=True)
        for batch, result in landed:
            live.landed(batch.events, result.events, result.dead_letters)
        live.turn(writer.con, last=last)
        if pusher is not None and live.stats.analyses != analysed:
            pusher.update(build_alerts(
                writer.con, [t.incident for t in live.snapshot], as_of_us=live.newest_us,
                interval_us=live.interval_us, severities=live.severities))
        analysed = live.stats.analyses
        if max_seconds is not None and time.monotonic() - started >= max_seconds:
            stop.set()

    try:
        if metrics_address is not None:
            server = serve_metrics(registry, metrics_address)
            if on_notice is not None:
                on_notice(f"serving {server.url}")
        # Ctrl-C ends `analyze --follow` as it always has (KeyboardInterrupt, "Interrupted."),
        # after the batch in flight; the loop's own signal handling is the ingester's.
        ingest_kafka(job, settings, stop=stop, between_batches=between_batches,
                     handle_signals=False, progress=ingest_metrics.update)
    finally:
        if live.results is not None:
            live.results.close()
        if pusher is not None:
            pusher.close()
        if server is not None:
            server.close()
    return live.stats
