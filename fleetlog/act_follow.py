"""``fleetlog act --follow``: the ingester's own loop, with the actor riding on it.

Like ``analyze --follow`` (``fleetlog.follow``), it lands a topic in a store of its own with the
ingester's loop (``ingest_kafka``: its own consumer group, offsets in the same transaction as the
rows, so a restart resumes exactly) — here only ``<prefix>.analysis``, where incidents and
recommendations are published — and between batches reads the recommendations that landed
since the last turn and hands them to the actor (``act.actor``), whose attempts land in the same
store through the one ``StoreSink``. With ``metrics_port`` it serves
``fleetlog_actions_total`` over HTTP for Prometheus.

It wires ingestion and act together, so it lives here on the top floor.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from fleetlog.act.actor import Actor, ActPolicy, NameMap, Outcome
from fleetlog.act.backend import Backend
from fleetlog.act.metrics import ActMetrics
from fleetlog.act.source import load_attempts, load_recommendations
from fleetlog.ingest import contract as c
from fleetlog.ingest.contract.metrics import serve_metrics
from fleetlog.ingest.ingester import KafkaIngest, ingest_kafka
from fleetlog.ingest.kafka.settings import KafkaSettings
from fleetlog.ingest.pipeline import Batch
from fleetlog.ingest.store.sink import StoreSink
from fleetlog.ingest.store.writer import BatchResult, StoreWriter


@dataclass
class FollowActStats:
    outcomes: dict[str, int] = field(default_factory=dict)
    recommendations: int = 0

    def summary(self) -> dict[str, Any]:
        return {"recommendations": self.recommendations, **self.outcomes}


def follow_act(
    db: Path, settings: KafkaSettings, backend: Backend, policy: ActPolicy,
    names: NameMap | None = None, *, topic_prefix: str | None = None, group: str | None = None,
    max_seconds: float | None = None, idle_exit_s: float | None = None,
    metrics_port: str | None = None, on_outcome: Callable[[Outcome], None] | None = None,
) -> FollowActStats:
    """Land ``<prefix>.analysis`` in ``db`` and act on each recommendation as it lands, until
    ``max_seconds`` have passed, nothing new arrived for ``idle_exit_s``, or Ctrl-C."""
    backend.node_count()  # an unreachable scheduler fails now, not at the first recommendation
    registry = CollectorRegistry()
    metrics = ActMetrics(registry)
    server = None if metrics_port is None else serve_metrics(registry, metrics_port)
    db = Path(db)
    prefix = topic_prefix or settings.topic_prefix
    job = KafkaIngest(db=db, topics=[c.topic_name("analysis", prefix)],
                      group=group or f"{prefix}-act-{db.stem}", until_idle_s=idle_exit_s,
                      memory_limit=None)
    stats = FollowActStats()
    stop = threading.Event()
    started = time.monotonic()
    state: dict[str, Any] = {"actor": None, "turned": False}

    def seen(outcome: Outcome) -> None:
        metrics.attempted(outcome.outcome, outcome.action)
        stats.outcomes[outcome.outcome] = stats.outcomes.get(outcome.outcome, 0) + 1
        if on_outcome is not None:
            on_outcome(outcome)

    def between_batches(writer: StoreWriter, landed: Sequence[tuple[Batch, BatchResult]],
                        last: bool) -> None:
        actor: Actor | None = state["actor"]
        if actor is None:  # the first turn: the attempts of earlier runs are the history
            actor = Actor(backend, policy, names, sink=StoreSink.sharing(writer.con),
                          history=load_attempts(writer.con), on_outcome=seen)
            state["actor"] = actor
        if landed or not state["turned"]:
            # All of them each time: the actor knows the ones it has seen (its own attempts and
            # the store's), and a recommendation may land with an older event time than the
            # newest one already read.
            recommendations = load_recommendations(writer.con)
            stats.recommendations = len(recommendations)
            actor.act(recommendations)
            state["turned"] = True
        if max_seconds is not None and time.monotonic() - started >= max_seconds:
            stop.set()

    try:
        ingest_kafka(job, settings, stop=stop, between_batches=between_batches,
                     handle_signals=False)
    finally:
        if server is not None:
            server.close()
    return stats
