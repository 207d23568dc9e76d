"""``ingest_kafka``: Kafka -> DuckDB, exactly once in effect, through crashes and rebalances.

The loop: poll records, decode them into the pending batch, and hand a full batch (or one that
waited ``linger_s``) to the writer thread (or, with ``worker_process``, to a writer process that
also decodes: ``ingest.worker``), which commits rows, dead letters and the next offset of each
partition in ONE DuckDB transaction. On start, and whenever partitions are assigned, each
partition resumes at the furthest offset stored by any shard of the group (``store.shards``); an
event id seen before is skipped by the writer. A crash loses at most the uncommitted batch, which
is read again; a rebalance drops what was buffered for the partitions that moved.

Stops: SIGINT/SIGTERM (the batch being built is committed whole), ``until_idle_s`` of quiet once
caught up, or an error that is not the data's fault (``BrokerUnavailable``, ``StoreError``) after
the batch in flight has finished.

Work that needs the store as it fills rides on this loop rather than copying it: ``between_batches``
is called on the loop's thread whenever no batch is in flight, with the batches committed since
(``fleetlog.follow``: ``analyze --follow`` re-analyzes and emits incidents there).
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, cast

from fleetlog.ingest import contract as c
from fleetlog.ingest.kafka.consumer import ConsumerTuning, KafkaSource
from fleetlog.ingest.kafka.settings import KafkaSettings
from fleetlog.ingest.pipeline import (
    DEFAULT_BATCH_EVENTS,
    BackgroundWriter,
    Batch,
    BatchWriter,
    IngestStats,
    Pending,
    YoungGarbage,
    fewer_gc_passes,
    stop_on_signals,
)
from fleetlog.ingest.store.database import open_store_waiting
from fleetlog.ingest.store.shards import RECENT_IDS, handover, write_sidecar
from fleetlog.ingest.store.writer import BatchResult, Snapshotter, StoreWriter
from fleetlog.ingest.worker import ProcessWriter, RawBatch, RawPending

TP = tuple[str, int]
Progress = Callable[[IngestStats], None]
# (the store's writer, the batches committed since the last call, whether the loop has ended)
BetweenBatches = Callable[[StoreWriter, Sequence[tuple[Batch, BatchResult]], bool], None]
_Turn = Callable[[Sequence[tuple[Any, BatchResult]], bool], None]  # the same, inside the loop


def default_topics(prefix: str) -> list[str]:
    """Every fleetlog topic family except the dead-letter queue."""
    return [c.topic_name(f, prefix) for f in c.TOPIC_FAMILIES if f != "dlq"]


# DuckDB keeps every block it writes in its buffer pool, up to 80% of the machine's memory by
# default: an ingester's memory would grow with its file for hours. Written blocks can be evicted
# (they are on disk), so a cap keeps it flat; inserts of 15,360-event batches need far less
# (its buffer pool stayed at 40 MB under a 64 MB cap while the file grew to 216 MB).
INGEST_MEMORY_LIMIT: Final = "512MB"


def default_group(prefix: str) -> str:
    return f"{prefix}-ingest"


@dataclass
class KafkaIngest:
    db: Path
    topics: Sequence[str]
    group: str
    until_idle_s: float | None = None  # None: follow until stopped
    batch_events: int = DEFAULT_BATCH_EVENTS
    linger_s: float = 0.5
    broker_timeout_s: float = 60.0
    tuning: ConsumerTuning = field(default_factory=ConsumerTuning)
    # Decode + write in a second process (its own GIL; see ingest.worker) instead of a writer
    # thread. Once the writer got cheap (15,360-event transactions, one values buffer per message)
    # the hand-over cost more than the second GIL gained: on the 2-core dev box, idle, the thread
    # landed 0.93 M GPU-samples/s at 48 us of CPU per event, the process 0.86 M at 65 us, and the
    # thread was ahead under load too (bench/bench_ingest.py). More cores may favour the process.
    worker_process: bool = False
    # A read-only copy of the store for readers (DuckDB lets no one else open a writer's file).
    snapshot: Path | None = None
    snapshot_every_s: float = 300.0
    # DuckDB's buffer pool in the writer; None leaves DuckDB's default (80% of the memory).
    memory_limit: str | None = INGEST_MEMORY_LIMIT


def ingest_kafka(
    job: KafkaIngest, settings: KafkaSettings, *, progress: Progress | None = None,
    stop: threading.Event | None = None, between_batches: BetweenBatches | None = None,
    handle_signals: bool = True,
) -> IngestStats:
    """Consume ``job.topics`` into ``job.db`` until stopped, idle, or failed.

    ``between_batches(writer, landed, last)`` (in-process writer only) rides on the loop: it is
    called on the loop's thread at each turn while no batch is in flight, so it may read and
    write the store through ``writer.con``, with the batches committed since its last call
    (oldest first; often none) and ``last`` False; once more with ``last`` True after the final
    commit of a loop that ended (stop, idle), never after an error. It may set ``stop``.
    ``handle_signals`` False leaves SIGINT/SIGTERM to the caller (Ctrl-C then raises
    ``KeyboardInterrupt`` once the batch in flight has ended whole).
    """
    if between_batches is not None and job.worker_process:
        raise ValueError("between_batches needs the in-process writer: the store is elsewhere")
    stop = stop or threading.Event()
    db = Path(job.db)
    stats = IngestStats(db=str(db.resolve()), source=f"kafka:{settings.bootstrap}",
                        group=job.group)
    stored: dict[TP, int] = {}
    lock = threading.Lock()

    def remember(offsets: dict[TP, int]) -> dict[TP, int]:
        with lock:
            stored.update(offsets)
            return dict(stored)

    with contextlib.ExitStack() as cleanup:
        garbage = cleanup.enter_context(fewer_gc_passes())
        batches: BatchWriter
        pending: Pending | RawPending
        turn: _Turn | None = None
        if job.worker_process:
            def on_ack(batch: RawBatch, result: BatchResult) -> None:
                remember(batch.next_offsets)  # the worker wrote the sidecar before its ack

            process = ProcessWriter(db, job.group, on_ack, snapshot=job.snapshot,
                                    snapshot_every_s=job.snapshot_every_s,
                                    memory_limit=job.memory_limit or "")
            cleanup.callback(process.close)
            remember(process.stored_offsets)
            batches, pending = process, RawPending()
        else:
            writer = StoreWriter(
                open_store_waiting(db, memory_limit=job.memory_limit),
                snapshot=Snapshotter(job.snapshot, job.snapshot_every_s) if job.snapshot
                else None,
            )
            cleanup.callback(writer.close)
            recent = collections.deque(writer.recent_ids(RECENT_IDS), maxlen=RECENT_IDS)
            write_sidecar(db, job.group, remember(writer.stored_offsets()), recent)

            def on_commit(batch: Batch, result: BatchResult) -> None:
                recent.extend(e.id for e in batch.events)
                write_sidecar(db, job.group, remember(batch.offsets), recent)

            batches, pending = BackgroundWriter(writer, on_commit), Pending()
            if between_batches is not None:
                rider, store = between_batches, writer

                def ride(landed: Sequence[tuple[Any, BatchResult]], last: bool) -> None:
                    rider(store, cast("Sequence[tuple[Batch, BatchResult]]", landed), last)

                turn = ride
        signals = stop_on_signals(stop) if handle_signals else contextlib.nullcontext(stop)
        try:
            with signals:
                _run(job, db, settings, batches, pending, stored, lock, stats, progress, stop,
                     garbage, turn)
        finally:
            stats.elapsed_s = time.monotonic() - stats.started
            stats.write_s, stats.wait_s = batches.write_s, batches.wait_s
            if isinstance(batches, ProcessWriter):
                stats.worker_rss_mb = batches.peak_rss_mb
    if progress is not None:
        progress(stats)
    return stats


def _run(
    job: KafkaIngest, db: Path, settings: KafkaSettings, batches: BatchWriter,
    pending: Pending | RawPending, stored: dict[TP, int], lock: threading.Lock,
    stats: IngestStats, progress: Progress | None, stop: threading.Event,
    garbage: YoungGarbage, turn: _Turn | None,
) -> None:
    def positions(assigned: set[TP]) -> dict[TP, int]:
        with lock:
            mine = dict(stored)
        others, landed_elsewhere = handover(db, job.group, job.topics, mine, assigned)
        if landed_elsewhere:
            batches.exclude(landed_elsewhere)
        starts = {tp: max(mine.get(tp, -1), others.get(tp, -1)) for tp in assigned}
        return {tp: offset for tp, offset in starts.items() if offset >= 0}

    source = KafkaSource(settings, job.topics, job.group, positions=positions,
                         quiesce=batches.quiesce, tuning=job.tuning,
                         broker_timeout_s=job.broker_timeout_s)
    last_records = time.monotonic()
    next_report = 0.0

    landed: list[tuple[Any, BatchResult]] = []  # committed, not yet shown to ``turn``

    def finish(done: Sequence[tuple[Any, BatchResult]]) -> None:
        for batch, result in done:
            stats.add(result)
            source.commit(batch.next_offsets if isinstance(batch, RawBatch) else batch.offsets)
        if turn is not None:
            landed.extend(done)

    def between(last: bool = False) -> None:
        """Let ``turn`` ride, while no batch is in flight (it may use the store then)."""
        if turn is not None and not batches.busy:
            done = landed.copy()
            landed.clear()
            turn(done, last)

    def flush() -> None:
        finish(batches.wait_room())
        between()  # also between back-to-back batches, when the writer never idles otherwise
        if pending:
            batches.submit(pending.take())

    try:
        while not stop.is_set():
            room = job.batch_events - pending.events
            polled = source.poll(timeout_s=0.2 if room > 0 else 0.0, max_records=max(room, 1))
            for tp in polled.revoked:
                pending.drop(tp)
            if polled.count and stats.first_record_at is None:
                stats.first_record_at = time.monotonic()
            for key, records in polled.records:
                if isinstance(pending, RawPending):
                    pending.add_records(key, records)
                else:
                    pending.add_values(key, key[0], [(r.offset, r.value) for r in records],
                                       records[-1].offset + 1)
            finish(batches.collect())  # a batch done meanwhile: count it, tell Kafka
            between()
            garbage.tick()
            now = time.monotonic()
            if polled.count or polled.assigned:
                last_records = now
            full = pending.events >= job.batch_events
            if pending and (full or now - pending.since >= job.linger_s):
                if full or batches.room:
                    flush()
            elif not polled.count:
                source.check_broker()
                if (job.until_idle_s is not None and now - last_records >= job.until_idle_s
                        and not pending and not batches.busy and source.caught_up()):
                    stats.stopped_by = "idle"
                    break
            if progress is not None and now >= next_report:
                next_report = now + 0.5
                _report(stats, source, progress)
        else:
            stats.stopped_by = "signal"
        flush()  # the batch being built is committed whole
        finish(batches.wait())
        between(last=True)
    finally:
        with contextlib.suppress(Exception):  # on an error path the first error is raised
            batches.wait()  # let the batch in flight end (commit or roll back) whole
        stats.lag = {f"{t}[{p}]": lag for (t, p), lag in source.lag().items()}
        source.close()


def _report(stats: IngestStats, source: KafkaSource, progress: Progress) -> None:
    stats.lag = {f"{t}[{p}]": lag for (t, p), lag in source.lag().items()}
    progress(stats)
