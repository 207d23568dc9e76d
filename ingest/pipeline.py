"""What every ingestion run shares: the batch being built, the writer thread, stats, stop signals.

``Pending`` is the batch being built, per source partition (a Kafka partition, or a file), so a
partition that moves to another ingester can be dropped from it whole. ``BackgroundWriter`` writes
one batch at a time on a worker thread: DuckDB releases the GIL while it inserts, so the main
thread polls and decodes the next batch meanwhile. A batch is committed whole or not at all.
``BatchWriter`` is what the ingester's loop needs of it (or of ``worker.ProcessWriter``).
"""

from __future__ import annotations

import bisect
import contextlib
import gc
import resource
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

from fleetlog.ingest import contract as c
from fleetlog.ingest.contract import DeadLetter
from fleetlog.ingest.store.writer import BatchResult, Origin, StoreWriter

TP = tuple[str, int]

# Events per DuckDB transaction. DuckDB stores tables in row groups of 122,880 rows; a
# transaction that inserts several full row groups has them compressed and written straight to
# the file (in parallel), while smaller ones go through the WAL and are rewritten at the next
# checkpoint. 15,360 rack scrapes (32 GPU rows each) are 4 row groups: 0.51 us of CPU per GPU
# sample row and 9.7 bytes on disk, against 0.88 us and 18.8 bytes at 4,096 events
# (bench/bench_ingest.py --stages). The linger time still cuts batches when the stream is slow.
DEFAULT_BATCH_EVENTS = 15_360


@dataclass
class Part:
    events: list[c.Envelope] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    next_offset: int = 0
    origin: str = ""  # the Kafka topic or the file
    partition: int | None = None
    offsets: list[int] = field(default_factory=list)  # each event's offset (or line)


class BatchOrigins:
    """Where each event of a batch came from, by index: the writer asks only for the events
    it turns into dead letters (refused, conflicting), so nothing is built per event."""

    def __init__(self, parts: Sequence[Part]) -> None:
        self._parts = [p for p in parts if p.events]
        self._ends: list[int] = []
        total = 0
        for part in self._parts:
            total += len(part.events)
            self._ends.append(total)

    def __getitem__(self, index: int, /) -> Origin:
        at = bisect.bisect_right(self._ends, index)
        part = self._parts[at]
        return part.origin, part.partition, part.offsets[index - (self._ends[at - 1] if at else 0)]


@dataclass
class Batch:
    events: list[c.Envelope]
    dead: list[DeadLetter]
    offsets: dict[TP, int]
    origins: BatchOrigins | None = None  # of ``events``, for the dead letters the writer makes


class Pending:
    """Decoded input not yet written, per source partition, with each one's next offset."""

    def __init__(self) -> None:
        self.parts: dict[TP, Part] = {}
        self.events = 0
        self.since = 0.0  # monotonic time of the first record in the batch

    def part(self, key: TP) -> Part:
        part = self.parts.get(key)
        if part is None:
            part = self.parts[key] = Part()
        if not self.since:
            self.since = time.monotonic()
        return part

    def add_values(self, key: TP, origin: str, values: list[tuple[int, bytes | None]],
                   next_offset: int) -> None:
        """Decode ``(offset, raw bytes)`` pairs; what fails becomes a dead letter."""
        part = self.part(key)
        decode, envelope, events, offsets = c.decode, c.Envelope, part.events, part.offsets
        partition = key[1] if key[1] >= 0 else None
        part.origin, part.partition = origin, partition
        for offset, value in values:
            event = decode(value)
            if type(event) is envelope:
                events.append(event)
                offsets.append(offset)
            else:
                assert isinstance(event, c.DecodeFailure)
                part.dead.append(DeadLetter.from_failure(
                    event, origin=origin, raw=value, partition=partition, offset=offset))
        self.events += len(values)
        part.next_offset = next_offset

    def drop(self, key: TP) -> None:
        part = self.parts.pop(key, None)
        if part is not None:
            self.events -= len(part.events) + len(part.dead)

    def take(self) -> Batch:
        events: list[c.Envelope] = []
        dead: list[DeadLetter] = []
        for part in self.parts.values():
            events += part.events
            dead += part.dead
        batch = Batch(events, dead, {k: p.next_offset for k, p in self.parts.items()},
                      BatchOrigins(list(self.parts.values())))
        self.parts, self.events, self.since = {}, 0, 0.0
        return batch

    def __bool__(self) -> bool:
        return bool(self.parts)


class BatchWriter(Protocol):
    """The ingester's writer side: ``BackgroundWriter`` (a thread) or ``worker.ProcessWriter``.

    Not a ``Sink`` (``contract.sink``), though both take events somewhere: a sink is handed
    events and is done with them, while this holds batches in flight whose Kafka offsets commit
    in the same transaction as their rows, hands each result back for the consumer to tell Kafka
    (``wait``, ``collect``), is waited on when partitions move (``quiesce``), and is told of ids
    another shard landed (``exclude``). The simulator, readers, replay and analysis have none of
    that, so this keeps its own name rather than stretching theirs.
    """

    write_s: float
    wait_s: float

    @property
    def busy(self) -> bool: ...  # a batch is in flight
    @property
    def room(self) -> bool: ...  # submit() would not have to wait
    def submit(self, batch: Any) -> None: ...
    def wait_room(self) -> Sequence[tuple[Any, BatchResult]]: ...
    def wait(self) -> Sequence[tuple[Any, BatchResult]]: ...
    def collect(self) -> Sequence[tuple[Any, BatchResult]]: ...
    def quiesce(self, timeout_s: float | None = None) -> None: ...
    def exclude(self, event_ids: set[str]) -> None: ...


class BackgroundWriter:
    """One batch in flight on a worker thread; ``wait`` returns its result or raises its error."""

    def __init__(self, writer: StoreWriter,
                 on_commit: Callable[[Batch, BatchResult], None]) -> None:
        self.writer = writer
        self._on_commit = on_commit
        self._idle = threading.Event()
        self._idle.set()
        self._batch: Batch | None = None
        self._outcome: tuple[Batch, BatchResult] | BaseException | None = None
        self._thread: threading.Thread | None = None
        self.write_s = 0.0  # time spent writing (on the worker thread)
        self.wait_s = 0.0  # time the main thread waited for a batch to finish

    def submit(self, batch: Batch) -> None:
        assert self._idle.is_set() and self._outcome is None, "wait() before submit()"
        self._idle.clear()
        self._thread = threading.Thread(target=self._run, args=(batch,), name="fleetlog-writer",
                                        daemon=True)
        self._thread.start()

    def _run(self, batch: Batch) -> None:
        started = time.perf_counter()
        try:
            result = self.writer.write_batch(batch.events, batch.dead, batch.offsets,
                                             batch.origins)
            self._on_commit(batch, result)  # before idle: a rebalance then sees the new offsets
            result.committed_at = time.monotonic()
            self._outcome = (batch, result)
        except BaseException as exc:  # handed to the main thread by wait()
            self._outcome = exc
        finally:
            self.write_s += time.perf_counter() - started
            self._idle.set()

    def exclude(self, event_ids: set[str]) -> None:
        self.writer.exclude(event_ids)

    def quiesce(self, timeout_s: float | None = None) -> None:
        """Wait until no batch is being written (called from kafka-python's IO thread)."""
        self._idle.wait(timeout_s)

    @property
    def busy(self) -> bool:
        return not self._idle.is_set()

    @property
    def room(self) -> bool:
        return not self.busy and self._outcome is None

    def collect(self) -> list[tuple[Batch, BatchResult]]:
        """The finished batch's result, if one is waiting (never blocks; raises its error)."""
        if self.busy or self._outcome is None:
            return []
        return self.wait()

    def wait_room(self) -> list[tuple[Batch, BatchResult]]:
        return self.wait()

    def wait(self) -> list[tuple[Batch, BatchResult]]:
        started = time.perf_counter()
        self._idle.wait()
        self.wait_s += time.perf_counter() - started
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        outcome, self._outcome = self._outcome, None
        if isinstance(outcome, BaseException):
            raise outcome
        return [] if outcome is None else [outcome]


@dataclass
class IngestStats:
    """Counts so far; ``to_json`` is the ``--json`` summary and the live display's data."""

    db: str
    source: str
    group: str | None = None
    events: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    conflicts: int = 0  # ids stored with other content (also counted in dead_letters)
    batches: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    lag: dict[str, int | None] = field(default_factory=dict)  # "topic[partition]" -> records
    started: float = field(default_factory=time.monotonic)
    elapsed_s: float = 0.0
    stopped_by: str = "running"
    first_record_at: float | None = None  # monotonic: the first record read
    last_commit_at: float | None = None  # monotonic: the last batch committed
    write_s: float = 0.0  # writer thread busy (DuckDB, sidecar)
    wait_s: float = 0.0  # main thread blocked on the writer
    worker_rss_mb: float = 0.0  # peak RSS of the writer process, when there is one
    recent: list[tuple[float, int, int]] = field(default_factory=list)  # (t, events, samples)

    def add(self, result: BatchResult) -> None:
        self.events += result.events
        self.duplicates += result.duplicates
        self.dead_letters += result.dead_letters
        self.conflicts += result.conflicts
        self.batches += 1
        for table, count in result.rows.items():
            self.rows[table] = self.rows.get(table, 0) + count
        now = time.monotonic()
        self.last_commit_at = result.committed_at or now
        self.recent.append((now, self.events, self.gpu_samples))
        self.recent = [r for r in self.recent if now - r[0] <= 5.0]

    @property
    def gpu_samples(self) -> int:
        return self.rows.get("gpu_samples_raw", 0)

    def rate(self) -> tuple[float, float]:
        """(events/s, GPU samples/s) over the last few seconds."""
        if len(self.recent) < 2:
            return 0.0, 0.0
        (t0, e0, s0), (t1, e1, s1) = self.recent[0], self.recent[-1]
        span = max(t1 - t0, 1e-6)
        return (e1 - e0) / span, (s1 - s0) / span

    @property
    def active_s(self) -> float:
        """From the first record read to the last batch committed: the rate's denominator."""
        if self.first_record_at is None or self.last_commit_at is None:
            return 0.0
        return max(self.last_commit_at - self.first_record_at, 1e-9)

    def to_json(self, *, detail: bool = True) -> dict[str, Any]:
        """``detail=False`` sums the lag over partitions (for a table people read)."""
        elapsed = self.elapsed_s or (time.monotonic() - self.started)
        active = self.active_s
        lags = [v for v in self.lag.values() if v is not None]
        lag: Any = dict(sorted(self.lag.items())) if detail else sum(lags)
        out: dict[str, Any] = {
            "db": self.db, "source": self.source, "group": self.group,
            "events": self.events, "duplicates": self.duplicates,
            "dead_letters": self.dead_letters, "conflicts": self.conflicts,
            "gpu_samples": self.gpu_samples,
            "batches": self.batches, "rows": dict(sorted(self.rows.items())),
            "elapsed_s": round(elapsed, 3),
            "active_s": round(active, 3),
            "events_per_s": round(self.events / active, 1) if active else 0.0,
            "gpu_samples_per_s": round(self.gpu_samples / active, 1) if active else 0.0,
            "write_s": round(self.write_s, 3), "writer_wait_s": round(self.wait_s, 3),
            "partitions": len(self.lag),
            "lag": lag,
            "peak_rss_mb": round(peak_rss_mb(), 1),
        }
        if self.worker_rss_mb:
            out["writer_process_peak_rss_mb"] = round(self.worker_rss_mb, 1)
        out["stopped_by"] = self.stopped_by
        return out


def peak_rss_mb() -> float:
    """This process's peak resident memory, in MB.

    Linux keeps ``ru_maxrss`` across exec, so a process started by a big parent (a benchmark
    holding its messages) would report the parent's peak; the kernel's ``VmHWM`` is this
    program's own.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[threading.Event]:
    """SIGINT and SIGTERM set ``stop`` (the loop then ends cleanly); handlers restored after."""
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handle(signum: int, frame: Any) -> None:
        stop.set()

    for s in previous:
        signal.signal(s, handle)
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


class YoungGarbage:
    """Collects cyclic garbage on a clock while the collector's threshold is raised.

    With a generation-0 threshold of 100,000 a slow stream may take minutes to trigger a pass,
    and kafka-python's poll leaves reference cycles behind (frames, tracebacks and futures that
    keep fetched records alive): a follower at 1,000 events/s grew by ~150 MB before each pass
    freed it. Collecting the young generations every second costs a few milliseconds; the
    whole heap is walked once a minute, and then glibc and Arrow's allocator are asked to hand
    their free pages back (``malloc_trim``, ``release_unused``): several threads allocate here,
    and the arenas they leave half-empty otherwise keep the resident size creeping up.
    """

    def __init__(self, every_s: float = 1.0, full_every_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s, self.full_every_s = every_s, full_every_s
        self.clock = clock  # a test passes its own, so "a second later" needs no real second
        now = clock()
        self._next, self._next_full = now + every_s, now + full_every_s

    def tick(self) -> None:
        now = self.clock()
        if now < self._next:
            return
        if now >= self._next_full:
            gc.collect()
            _return_free_memory()
            self._next_full = now + self.full_every_s
        else:
            gc.collect(1)
        self._next = now + self.every_s


def _return_free_memory() -> None:
    # Arrow's allocator (mimalloc here) keeps freed pages for reuse just as glibc does.
    pa.default_memory_pool().release_unused()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _glibc() -> Any:
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:  # not glibc (musl, macOS): nothing to trim
        return None


_LIBC = _glibc()


def _mallinfo2() -> Any:
    """glibc's ``mallinfo2`` (2.33 and later) with its result type declared, or None."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
            "fordblks", "keepcost")]

    mallinfo2 = getattr(_LIBC, "mallinfo2", None)
    if mallinfo2 is not None:
        mallinfo2.restype = MallInfo2
    return mallinfo2


_MALLINFO2 = _mallinfo2()


def malloc_in_use_bytes() -> int | None:
    """Bytes glibc's malloc has handed out and not had back, over every arena (``mallinfo2``);
    None where there is no glibc. Unlike RSS it does not move with pages kept for reuse."""
    return None if _MALLINFO2 is None else int(_MALLINFO2().uordblks)


@contextlib.contextmanager
def fewer_gc_passes(clock: Callable[[], float] = time.monotonic) -> Iterator[YoungGarbage]:
    """Run the cycle collector less often while ingesting; call ``tick()`` of what it yields.

    Ingestion allocates millions of short-lived, acyclic objects (Kafka records, events, their
    payloads), freed by reference counting. At Python's default generation-0 threshold (700
    allocations) the collector runs thousands of times per batch and each pass walks the batch
    being built: decoding and tabulating a 15,360-event batch took 22-29 us per event with the
    default, 17 us with a threshold of 100,000 (CPU time, bench/bench_ingest.py's messages).
    The cycles that do arise are collected on a clock instead (``YoungGarbage``).
    """
    previous = gc.get_threshold()
    gc.set_threshold(100_000, 50, 1000)
    try:
        yield YoungGarbage(clock=clock)
    finally:
        gc.set_threshold(*previous)
