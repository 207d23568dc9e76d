"""Decode and write in a second process, so the Kafka consumer keeps a GIL of its own.

kafka-python parses every record in Python; decoding (msgspec, with the contract's validation) and
building Arrow tables are Python too. In one process these share one GIL and run one at a time.
``ProcessWriter`` moves decoding, Arrow and DuckDB into a worker process: the consumer process
sends each batch as ONE bytes blob plus small arrays (offsets, lengths, partitions) through a
pipe, and the worker answers with the batch's result once it is committed.

The contract with the consumer is the one of ``pipeline.BackgroundWriter``: one batch in flight,
``quiesce`` waits for it (a rebalance then reads final offsets), ``wait``/``collect`` hand its
result or error to the main thread. The worker owns the store file (its lock), writes the shard's
sidecar after every commit, ignores SIGINT/SIGTERM (the consumer decides when to stop, so a batch
is committed or abandoned whole) and dies with its parent (``PR_SET_PDEATHSIG``): a SIGKILLed
ingester never leaves a writer behind that still holds the lock.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from fleetlog.ingest.store import StoreError
from fleetlog.ingest.store.writer import BatchResult

TP = tuple[str, int]
_PR_SET_PDEATHSIG = 1


@dataclass
class RawPart:
    offsets: list[int] = field(default_factory=list)
    values: list[bytes | None] = field(default_factory=list)
    next_offset: int = 0


@dataclass
class RawBatch:
    """What crosses the pipe: one blob of message bytes and the arrays to cut it up again."""

    keys: list[TP]
    part_index: np.ndarray[Any, Any]  # int32: index into keys, per message
    offsets: np.ndarray[Any, Any]  # int64: Kafka offset, per message
    lengths: np.ndarray[Any, Any]  # int64: value length, -1 for a null value
    blob: bytes
    next_offsets: dict[TP, int]


class RawPending:
    """Records not yet written, per partition, still as bytes (decoding happens in the worker)."""

    def __init__(self) -> None:
        self.parts: dict[TP, RawPart] = {}
        self.events = 0
        self.since = 0.0

    def add_records(self, key: TP, records: list[Any]) -> None:
        part = self.parts.get(key)
        if part is None:
            part = self.parts[key] = RawPart()
        if not self.since:
            self.since = time.monotonic()
        part.offsets += [r.offset for r in records]
        part.values += [r.value for r in records]
        part.next_offset = records[-1].offset + 1
        self.events += len(records)

    def drop(self, key: TP) -> None:
        part = self.parts.pop(key, None)
        if part is not None:
            self.events -= len(part.values)

    def take(self) -> RawBatch:
        keys = list(self.parts)
        parts = [self.parts[k] for k in keys]
        values = [v for p in parts for v in p.values]
        batch = RawBatch(
            keys=keys,
            part_index=np.repeat(np.arange(len(keys), dtype=np.int32),
                                 [len(p.values) for p in parts]),
            offsets=np.fromiter((o for p in parts for o in p.offsets), np.int64, len(values)),
            lengths=np.fromiter((-1 if v is None else len(v) for v in values), np.int64,
                                len(values)),
            blob=b"".join(v for v in values if v is not None),
            next_offsets={k: p.next_offset for k, p in zip(keys, parts, strict=True)},
        )
        self.parts, self.events, self.since = {}, 0, 0.0
        return batch

    def __bool__(self) -> bool:
        return bool(self.parts)


class ProcessWriter:
    """The worker process and the consumer's end of its pipe (see the module docstring).

    Up to ``depth`` batches are in flight, so the worker decodes the next batch while DuckDB
    writes the previous one; results come back in order.
    """

    def __init__(self, db: Path, group: str, on_commit: Callable[[RawBatch, BatchResult], None],
                 *, depth: int = 2, start_timeout_s: float = 60.0,
                 snapshot: Path | None = None, snapshot_every_s: float = 300.0,
                 memory_limit: str = "") -> None:
        # A plain child interpreter (not multiprocessing's spawn, which re-imports __main__ and
        # fails in scripts without a main guard; not fork, which copies a process with threads).
        mine, theirs = socket.socketpair()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "fleetlog.ingest.worker", str(theirs.fileno()), str(db), group,
             str(snapshot or ""), str(snapshot_every_s), memory_limit],
            pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
        )
        theirs.close()
        self._conn = Connection(mine.detach())
        # Batch bytes go straight onto the socket after their header (Connection.recv_bytes
        # would assemble tens of MB in a BytesIO and copy them twice more on the other side).
        self._raw = socket.socket(fileno=os.dup(self._conn.fileno()))
        self._on_commit = on_commit
        self.depth = depth
        if not self._conn.poll(start_timeout_s):
            self.close()
            raise StoreError(f"the writer process did not open {db} in {start_timeout_s:g}s: "
                             "is the disk responding?")
        kind, payload = self._conn.recv()
        if kind == "error":
            self.close()
            raise payload
        self.stored_offsets: dict[TP, int] = payload
        self._changed = threading.Condition()
        self._inflight: collections.deque[RawBatch] = collections.deque()
        self._done: list[tuple[RawBatch, BatchResult] | BaseException] = []
        self.write_s = 0.0
        self.wait_s = 0.0
        self.peak_rss_mb = 0.0
        self._reader = threading.Thread(target=self._read, name="fleetlog-writer-acks",
                                        daemon=True)
        self._reader.start()

    def submit(self, batch: RawBatch) -> None:
        with self._changed:
            assert len(self._inflight) < self.depth, "wait_room() before submit()"
            # What waits for the ack needs the offsets, not the bytes (tens of MB per batch).
            self._inflight.append(dataclasses.replace(batch, blob=b""))
        try:
            self._conn.send((batch.keys, batch.part_index, batch.offsets, batch.lengths,
                             batch.next_offsets, len(batch.blob)))
            self._raw.sendall(batch.blob)
        except OSError as exc:
            self._fail(StoreError(f"the ingester's writer process is gone ({exc}); nothing of "
                                  "its batch was kept: run again"))

    def exclude(self, event_ids: set[str]) -> None:
        """Ids another shard landed (a hand-over): the worker skips them as duplicates."""
        with contextlib.suppress(OSError):  # a dead worker is reported by the next batch
            self._conn.send(("exclude", sorted(event_ids)))

    def _read(self) -> None:
        while True:
            try:
                kind, payload, seconds, rss_mb = self._conn.recv()
            except (EOFError, OSError):
                self._fail(StoreError("the ingester's writer process died (out of memory?); "
                                      "nothing of its batch was kept: run again"))
                return
            self.write_s += seconds
            self.peak_rss_mb = max(self.peak_rss_mb, rss_mb)
            if kind != "done":
                self._fail(payload)
                return
            with self._changed:
                batch = self._inflight[0]
            payload.committed_at = time.monotonic()
            self._on_commit(batch, payload)  # before it leaves the flight: rebalances see it
            with self._changed:
                self._inflight.popleft()
                self._done.append((batch, payload))
                self._changed.notify_all()

    def _fail(self, error: BaseException) -> None:
        with self._changed:
            if self._inflight:
                self._inflight.clear()
                self._done.append(error)
            self._changed.notify_all()

    @property
    def busy(self) -> bool:
        return bool(self._inflight)

    @property
    def room(self) -> bool:
        return len(self._inflight) < self.depth

    def quiesce(self, timeout_s: float | None = None) -> None:
        """Wait until nothing is in flight (called from kafka-python's IO thread)."""
        with self._changed:
            self._changed.wait_for(lambda: not self._inflight, timeout_s)

    def _take(self, until: Callable[[], bool]) -> list[tuple[RawBatch, BatchResult]]:
        started = time.perf_counter()
        with self._changed:
            self._changed.wait_for(until)
            done, self._done = self._done, []
        self.wait_s += time.perf_counter() - started
        for outcome in done:
            if isinstance(outcome, BaseException):
                raise outcome
        return done  # type: ignore[return-value]

    def collect(self) -> list[tuple[RawBatch, BatchResult]]:
        return self._take(lambda: True)

    def wait_room(self) -> list[tuple[RawBatch, BatchResult]]:
        return self._take(lambda: len(self._inflight) < self.depth)

    def wait(self) -> list[tuple[RawBatch, BatchResult]]:
        return self._take(lambda: not self._inflight)

    def close(self, timeout_s: float = 30.0) -> None:
        with contextlib.suppress(OSError):
            self._conn.send(None)
        try:
            self._process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(5)
        self._raw.close()
        self._conn.close()


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _read_exactly(fd: int, size: int) -> bytearray:
    """The ``size`` bytes the consumer wrote after a batch header, read into one buffer."""
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        count = os.readv(fd, [view[got:]])
        if count == 0:
            raise EOFError("the consumer closed the pipe mid-batch")
        got += count
    return buffer


def _decode(pending_type: Any, header: Any, blob: bytes | bytearray) -> Any:
    keys, part_index, offsets, lengths, next_offsets, _size = header
    pending = pending_type()
    sizes = np.where(lengths < 0, 0, lengths)
    ends = np.cumsum(sizes)
    starts = ends - sizes
    # Python ints once per batch: indexing numpy arrays per message costs ~1 us each.
    view, start_at, end_at, offset_at = memoryview(blob), starts.tolist(), ends.tolist(), \
        offsets.tolist()
    null = (lengths < 0).tolist()
    for index, key in enumerate(keys):
        rows = np.flatnonzero(part_index == index).tolist()
        values: list[tuple[int, bytes | None]] = [
            (offset_at[i], None if null[i] else bytes(view[start_at[i]:end_at[i]]))
            for i in rows
        ]
        pending.add_values(key, key[0], values, next_offsets[key])
    return pending.take()


def _worker_main(conn: Connection, db: str, group: str, snapshot: str = "",
                 snapshot_every_s: float = 300.0, memory_limit: str = "") -> None:
    """The worker: open the store; decode each batch, and write it on a thread meanwhile."""
    import queue

    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if os.getppid() == 1:  # the parent died before the death signal was armed
        return
    from fleetlog.ingest.pipeline import Pending, fewer_gc_passes, peak_rss_mb
    from fleetlog.ingest.store.database import open_store_waiting
    from fleetlog.ingest.store.shards import RECENT_IDS, write_sidecar
    from fleetlog.ingest.store.writer import Snapshotter, StoreWriter

    try:
        writer = StoreWriter(
            open_store_waiting(Path(db), memory_limit=memory_limit or None),
            snapshot=Snapshotter(snapshot, snapshot_every_s) if snapshot else None,
        )
        stored = writer.stored_offsets()
        recent = collections.deque(writer.recent_ids(RECENT_IDS), maxlen=RECENT_IDS)
        write_sidecar(Path(db), group, stored, recent)
    except BaseException as exc:
        conn.send(("error", exc))
        return
    conn.send(("ready", stored))
    # The worker's whole life is ingestion: decoded batches are big and acyclic.
    with fewer_gc_passes() as garbage:
        decoded: queue.Queue[Any] = queue.Queue(maxsize=1)

        def write_loop() -> None:
            while (item := decoded.get()) is not None:
                batch, seconds = item
                started = time.perf_counter()
                try:
                    result = writer.write_batch(batch.events, batch.dead, batch.offsets,
                                                batch.origins)
                    stored.update(batch.offsets)
                    recent.extend(e.id for e in batch.events)
                    write_sidecar(Path(db), group, stored, recent)
                    reply: tuple[str, Any] = ("done", result)
                except Exception as exc:  # handed to the consumer, which stops with its message
                    reply = ("error", exc)
                conn.send((*reply, seconds + time.perf_counter() - started, peak_rss_mb()))
                if reply[0] == "error":
                    return

        thread = threading.Thread(target=write_loop, name="fleetlog-writer")
        thread.start()
        try:
            while thread.is_alive():
                header = conn.recv()
                if header is None:
                    break
                if header[0] == "exclude":  # before any batch read after the hand-over
                    writer.exclude(header[1])
                    continue
                blob = _read_exactly(conn.fileno(), header[5])
                started = time.perf_counter()
                batch = _decode(Pending, header, blob)
                decoded.put((batch, time.perf_counter() - started))
                garbage.tick()
        except (EOFError, OSError):
            pass  # the consumer is gone: finish what is queued, then stop
        finally:
            while thread.is_alive():  # the writer takes what is queued, then the end mark
                try:
                    decoded.put(None, timeout=0.5)
                    break
                except queue.Full:
                    continue
            thread.join()
            writer.close()


if __name__ == "__main__":
    _worker_main(Connection(int(sys.argv[1])), sys.argv[2], sys.argv[3],
                 sys.argv[4] if len(sys.argv) > 4 else "",
                 float(sys.argv[5]) if len(sys.argv) > 5 else 300.0,
                 sys.argv[6] if len(sys.argv) > 6 else "")
