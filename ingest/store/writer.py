"""Lands contract events in the DuckDB store: one transaction per batch, column-wise, deduplicated.

``StoreWriter.write_batch`` takes decoded events, dead letters and (for Kafka) the next offset of
each partition, and writes all of it in ONE transaction: rows, dead letters and offsets commit
together or not at all, so a crash neither loses nor duplicates an event. Rows go in as Arrow
tables (``store.tables``; no per-row inserts); an event whose id is already stored is skipped.
An id names one fact: an event whose id is stored (or earlier in the batch) with other content is
not a duplicate but a conflict. The stored event is kept; the newcomer becomes a dead letter
(stage ``conflict``, saying what differs) and is counted in ``BatchResult.conflicts``.

An event that the store refuses (a value out of its column's range) would otherwise fail every
retry of its batch and stall ingestion: the writer finds it by bisection, keeps it as a dead
letter (stage ``validate``) and commits the rest. The dead letters made here keep where their
event came from (Kafka topic, partition and offset; file and line) when the caller passes
``origins``. Failures that are not the data's fault (disk full, I/O) roll the whole batch back
and raise ``StoreError`` with what to do.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

import duckdb
import msgspec
import pyarrow as pa

from fleetlog.ingest import contract as c
from fleetlog.ingest.contract import DeadLetter
from fleetlog.ingest.store import StoreError, open_store, rollups, store_files, tables

# Where an event came from: (Kafka topic or file, partition or None, offset or line number).
Origin = tuple[str, int | None, int | None]


class Origins(Protocol):
    """The origin of each event of a batch, by its index (a list, or a lazy look-up)."""

    def __getitem__(self, index: int, /) -> Origin: ...


@dataclass
class BatchResult:
    events: int = 0  # newly landed
    duplicates: int = 0  # skipped: already stored, or twice in the batch, with the same content
    dead_letters: int = 0  # including the conflicts and the events the store refused
    conflicts: int = 0  # an id already stored (or earlier in the batch) with different content
    rows: dict[str, int] = field(default_factory=dict)  # raw table -> rows added
    committed_at: float | None = None  # monotonic time of the commit, when someone noted it
    # (oldest, newest) time of the samples newly landed (for the rollup keeper); not added up
    sample_span: tuple[int, int] | None = None

    def add(self, other: BatchResult) -> None:
        self.events += other.events
        self.duplicates += other.duplicates
        self.dead_letters += other.dead_letters
        self.conflicts += other.conflicts
        for table, count in other.rows.items():
            self.rows[table] = self.rows.get(table, 0) + count

    @property
    def gpu_samples(self) -> int:
        return self.rows.get("gpu_samples_raw", 0)


# Errors that say "this data does not fit" rather than "the store cannot be written".
_DATA_ERRORS: tuple[type[BaseException], ...] = (
    duckdb.ConversionException, duckdb.OutOfRangeException, duckdb.InvalidInputException,
    duckdb.ConstraintException, duckdb.TypeMismatchException, pa.ArrowInvalid,
    pa.ArrowTypeError, OverflowError,
)


# The memory limit the writer asks for while shedding (see StoreWriter): under what it holds
# between commits, so DuckDB walks every eviction queue, and over what restoring the limit needs.
SHED_TARGET: Final = "256KiB"


class Snapshotter:
    """Publishes a read-only copy of the store every ``every_s`` seconds (after a commit).

    DuckDB lets one process hold a database file: while an ingester runs, nobody else can open
    its file, not even to read. Reports, SQL and batch analysis read the snapshot instead. The
    copy is written beside it and renamed into place, so a reader never sees half a snapshot.
    """

    def __init__(self, path: str | Path, every_s: float = 300.0) -> None:
        self.path = Path(path)
        self.every_s = every_s
        self.last = float("-inf")
        self.taken = 0

    def maybe(self, con: duckdb.DuckDBPyConnection, *, force: bool = False) -> bool:
        now = time.monotonic()
        if not force and now - self.last < self.every_s:
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        partial.unlink(missing_ok=True)
        row = con.execute("SELECT current_database()").fetchone()
        source = row[0] if row else "main"
        quoted = str(partial).replace("'", "''")
        con.execute(f"ATTACH '{quoted}' AS fleetlog_snapshot")
        try:
            con.execute(f'COPY FROM DATABASE "{source}" TO fleetlog_snapshot')
        finally:
            con.execute("DETACH fleetlog_snapshot")
        partial.replace(self.path)  # atomic: readers see the old or the new copy
        self.last, self.taken = now, self.taken + 1
        return True


class StoreWriter:
    """Writes batches of events into an open store connection (the single writer of that file).

    DuckDB keeps the blocks it writes cached in its buffer pool until its memory limit forces
    them out, so a long-running writer's memory climbs to the limit. Nothing here reads them
    again except the newest ``event_log`` blocks (the dedup look-up), so every ``shed_every_s``
    the cache is dropped: lowering the limit for a moment makes DuckDB evict what it can (a few
    ms). Lowering the limit for good would do it too, but under ~300 MB DuckDB inserts a
    15,360-event batch on one thread instead of two (twice the wall time, measured).

    The same pass drains DuckDB's eviction queues. Every block a query allocates (the dedup
    look-up's hash join makes a few per batch) leaves an entry there that keeps its ~200-byte
    block handle allocated after the block is gone, and DuckDB purges a queue only once it
    holds 32,768 entries. An eviction stops at the first queue that reaches its target; only
    one that cannot reach it walks every queue to the end, so the limit asked for is
    ``SHED_TARGET``, below what a writer holds between commits (1.3-1.9 MiB measured: appended
    blocks that cannot be evicted before a checkpoint). Not 0 bytes: right after a checkpoint
    nothing is held, DuckDB accepts the limit, and the statement that restores it may itself
    need a few KiB (a 35-minute soak stopped on "failed to allocate data of size 2.0 KiB
    (0 bytes/0 bytes used)"). With a 16 MB target, 8,000 commits of 100 events (an hour of
    following at two commits a second) grew RSS by 34 MB; with the queues drained by 4 MB
    (``bench/writer_memory.py``).
    """

    def __init__(self, con: duckdb.DuckDBPyConnection,
                 snapshot: Snapshotter | None = None, shed_every_s: float = 60.0,
                 shed_target: str = SHED_TARGET) -> None:
        self.con = con
        self.snapshot = snapshot
        self.totals = BatchResult()
        self._registered: list[str] = []
        self._elsewhere: dict[str, None] = {}  # ids landed by another shard (a hand-over)
        self.shed_every_s = shed_every_s
        self.shed_target = shed_target  # another only to measure it (bench/writer_memory.py)
        self._next_shed = time.monotonic() + shed_every_s
        # Rolls up each hour of samples once it has closed (store/rollups.py).
        self.rollups = rollups.RollupKeeper(con)
        # As DuckDB prints it ("488.2 MiB" for 512MB), which is rounded: set once here, so
        # every restore after a shed sets the same number of bytes as the limit it replaces.
        row = con.execute("SELECT current_setting('memory_limit')").fetchone()
        self._memory_limit = str(row[0]) if row else ""
        if self._memory_limit:
            con.execute(f"SET memory_limit = '{self._memory_limit}'")

    def exclude(self, event_ids: Iterable[str], keep: int = 100_000) -> None:
        """Treat these ids as already stored: another shard of the group landed them."""
        self._elsewhere.update(dict.fromkeys(event_ids))
        for stale in list(self._elsewhere)[: max(0, len(self._elsewhere) - keep)]:
            del self._elsewhere[stale]

    def close(self) -> None:
        self._keep_rollups(self.rollups.close)
        if self.snapshot is not None and self.totals.events:
            self.snapshot.maybe(self.con, force=True)  # the final state, for batch readers
        self.con.close()

    def stored_offsets(self) -> dict[tuple[str, int], int]:
        """Next offset to read per (topic, partition), as committed with the rows."""
        rows = self.con.execute("SELECT topic, partition, next_offset FROM ingest_offsets")
        return {(t, p): o for t, p, o in rows.fetchall()}

    def recent_ids(self, limit: int) -> list[str]:
        """Ids of the events landed last (newest batch first), for the shard's sidecar."""
        rows = self.con.execute(
            "SELECT event_id FROM event_log ORDER BY landed_at DESC LIMIT ?", [limit]).fetchall()
        return [r[0] for r in reversed(rows)]

    def write_batch(
        self,
        events: Sequence[c.Envelope],
        dead: Sequence[DeadLetter] = (),
        offsets: Mapping[tuple[str, int], int] | None = None,
        origins: Origins | None = None,
    ) -> BatchResult:
        """Land ``events``, ``dead`` letters and ``offsets`` in one transaction.

        ``origins[i]`` says where ``events[i]`` came from, for the dead letter it may become.
        """
        try:
            result = self._transaction(events, dead, offsets or {}, origins, commit=True)
        except _DATA_ERRORS as exc:
            bad = self._poison(list(events))
            if not bad:
                raise StoreError(f"writing the batch failed ({_first_line(exc)}); nothing of it "
                                 "was kept") from exc
            kept = [i for i, e in enumerate(events) if id(e) not in bad]
            extra = [_refused(e, bad[id(e)][1], _origin(origins, i))
                     for i, e in enumerate(events) if id(e) in bad]
            result = self._transaction(
                [events[i] for i in kept], [*dead, *extra], offsets or {},
                None if origins is None else [origins[i] for i in kept], commit=True)
        self.totals.add(result)
        span = result.sample_span
        if span is not None:
            self._keep_rollups(lambda: self.rollups.landed([span]))
        if self.snapshot is not None:
            self.snapshot.maybe(self.con)
        if time.monotonic() >= self._next_shed:
            self.shed_cache()
        return result

    def shed_cache(self) -> None:
        """Evict DuckDB's cached blocks and drain its eviction queues (see the class); the
        memory limit is left as it was."""
        self._next_shed = time.monotonic() + self.shed_every_s
        if not self._memory_limit:
            return
        try:
            self.con.execute(f"SET memory_limit = '{self.shed_target}'")
        except duckdb.OutOfMemoryException:
            pass  # as intended ("could not free up enough memory"): it walked every queue
        finally:
            self._restore_memory_limit()

    def _keep_rollups(self, step: Callable[[], None]) -> None:
        """Run a step of the rollup keeper (it survives a failed rollup itself); a failure of
        the store in its bookkeeping is a ``StoreError``, which says the batches are kept."""
        try:
            step()
        except duckdb.Error as exc:
            raise StoreError(f"rolling up the store's hours failed ({_first_line(exc)}); every "
                             "committed batch is kept: run `fleetlog rollup` once the store "
                             "can be written") from exc

    def _restore_memory_limit(self) -> None:
        try:
            self.con.execute(f"SET memory_limit = '{self._memory_limit}'")
        except duckdb.Error as exc:
            raise StoreError(
                f"could not restore DuckDB's memory limit after shedding its cache "
                f"({_first_line(exc)}); run the ingester again: it resumes from the offsets "
                "stored with the last batch") from exc

    def _transaction(
        self, events: Sequence[c.Envelope], dead: Sequence[DeadLetter],
        offsets: Mapping[tuple[str, int], int], origins: Origins | None = None, *,
        commit: bool,
    ) -> BatchResult:
        result = BatchResult()
        now = tables.now_us()
        self.con.execute("BEGIN TRANSACTION")
        try:
            fresh, result.duplicates, clashes = self._new_events(events)
            if clashes:
                dead = [*dead, *(_conflict(events[i], why, _origin(origins, i))
                                 for i, why in clashes)]
            result.events, result.conflicts, result.dead_letters = (
                len(fresh), len(clashes), len(dead))
            for table, data in tables.event_tables(fresh, now):
                self._append(table, data)
                result.rows[table] = result.rows.get(table, 0) + data.num_rows
            if dead:
                self._append("dead_letters_raw", tables.dead_letter_table(dead, now))
            if offsets:
                self._register("_fleetlog_offsets", tables.offsets_table(offsets, now))
                self.con.execute("INSERT OR REPLACE INTO ingest_offsets "
                                 "SELECT * FROM _fleetlog_offsets")
            self.con.execute("COMMIT" if commit else "ROLLBACK")
            times = [e.time_us for e in fresh
                     if isinstance(e.payload, c.GpuSampled | c.PortSampled)]
            if commit and times:
                result.sample_span = (min(times), max(times))
        except BaseException as exc:
            self._rollback()
            if isinstance(exc, duckdb.Error) and not isinstance(exc, _DATA_ERRORS):
                raise _storage_error(exc) from exc
            raise
        finally:
            self._unregister()
        return result

    def _poison(self, events: list[c.Envelope]) -> dict[int, tuple[c.Envelope, str]]:
        """Bisect ``events`` with rolled-back trial writes; the ones the store refuses, by id()."""
        bad: dict[int, tuple[c.Envelope, str]] = {}

        def trial(part: list[c.Envelope]) -> None:
            try:
                self._transaction(part, (), {}, None, commit=False)
            except _DATA_ERRORS as exc:
                if len(part) == 1:
                    bad[id(part[0])] = (part[0], _first_line(exc))
                    return
                middle = len(part) // 2
                trial(part[:middle])
                trial(part[middle:])

        trial(events)
        return bad

    def _new_events(
        self, events: Sequence[c.Envelope],
    ) -> tuple[list[c.Envelope], int, list[tuple[int, str]]]:
        """(events to land, duplicates, conflicts as (index in ``events``, what differs))."""
        unique: dict[str, int] = {}  # id -> index of its first event in the batch
        clashes: list[tuple[int, str]] = []
        elsewhere = self._elsewhere
        for index, event in enumerate(events):
            if event.id in elsewhere:
                continue
            first = unique.setdefault(event.id, index)
            if first != index and events[first] != event:
                clashes.append((index, _differences(events[first], event)))
        if not unique:
            return [], len(events), []
        times = [events[i].time_us for i in unique.values()]
        self._register("_fleetlog_batch_ids", pa.table({"event_id": pa.array(list(unique),
                                                                            pa.string())}))
        # Same id means same fact, hence same time: the time range lets DuckDB's zone maps
        # skip most of the (append-only, roughly time-ordered) log. (So an id reused with
        # another time is not found here, and lands as another event.)
        # The stored copies come with their content in the same scan: a redelivery is then
        # told from a conflict without reading the log twice (no rows: nothing to compare).
        seen = self.con.execute(
            "SELECT l.event_id, l.type, epoch_us(l.ts), l.source, l.key, l.rows, "
            "l.payload::VARCHAR FROM event_log l SEMI JOIN _fleetlog_batch_ids b "
            "USING (event_id) WHERE l.ts BETWEEN make_timestamptz(?) AND make_timestamptz(?)",
            [min(times), max(times)],
        ).fetchall()
        if not seen:
            return [events[i] for i in unique.values()], len(events) - len(unique) - len(
                clashes), clashes
        stored = {row[0] for row in seen}
        for event_id, why in self._stored_differences(
                {i: events[unique[i]] for i in stored}, seen, min(times), max(times)).items():
            clashes.append((unique[event_id], why))
        fresh = [events[i] for event_id, i in unique.items() if event_id not in stored]
        return fresh, len(events) - len(fresh) - len(clashes), clashes

    def _stored_differences(self, by_id: dict[str, c.Envelope], rows: list[Any], lo: int,
                            hi: int) -> dict[str, str]:
        """For events whose id is stored: id -> what differs, for those whose content does.

        Only run when a batch holds ids already stored (a redelivery): the envelope and payload
        are compared with their ``event_log`` ``rows`` (id, type, time, source, key, rows,
        payload), and a sample batch's rows with its samples table.
        """
        found: dict[str, str] = {}
        for event_id, *stored in rows:
            why = _stored_difference(by_id[event_id], stored)
            if why is None or found.get(event_id) == "":
                found[event_id] = ""  # one stored copy is the same: a plain duplicate
            else:
                found.setdefault(event_id, why)
        same = {event_id for event_id, why in found.items() if not why and isinstance(
            by_id[event_id].payload, c.GpuSampled | c.PortSampled)}
        if same:  # the envelope matches: do the sample rows?
            for event_id in self._sample_differences([by_id[i] for i in same], lo, hi):
                found[event_id] = "samples"
        return {event_id: why for event_id, why in found.items() if why}

    def _sample_differences(self, events: list[c.Envelope], lo: int, hi: int) -> set[str]:
        """Ids of the sample batches among ``events`` whose stored rows differ from theirs
        (one query per samples table, both ways: a row missing or a row too many)."""
        self._register("_fleetlog_sample_ids", pa.table({"event_id": pa.array(
            [e.id for e in events], pa.string())}))
        differ: set[str] = set()
        for table, data in tables.event_tables(events, 0):
            if table == "event_log":
                continue
            self._register(f"_fleetlog_compare_{table}", data)
            cols = ", ".join(f'"{name}"' for name in data.column_names)
            rows = self.con.execute(
                f"WITH mine AS (SELECT {cols} FROM _fleetlog_compare_{table}), "
                f"theirs AS (SELECT {cols} FROM {table} t SEMI JOIN _fleetlog_sample_ids "
                "USING (event_id) WHERE t.ts BETWEEN make_timestamptz(?) AND "
                "make_timestamptz(?)) SELECT DISTINCT event_id FROM ("
                "(FROM mine EXCEPT ALL FROM theirs) UNION ALL (FROM theirs EXCEPT ALL FROM mine))",
                [lo, hi]).fetchall()
            differ.update(str(row[0]) for row in rows)
        return differ

    def _register(self, name: str, data: pa.Table) -> None:
        self.con.register(name, data)
        self._registered.append(name)

    def _unregister(self) -> None:
        for name in self._registered:
            self.con.unregister(name)
        self._registered.clear()

    def _append(self, table: str, data: pa.Table) -> None:
        name = f"_fleetlog_{table}"
        self._register(name, data)
        self.con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM {name}")

    def _rollback(self) -> None:
        with contextlib.suppress(duckdb.Error):  # already aborted by the error
            self.con.execute("ROLLBACK")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _origin(origins: Origins | None, index: int) -> Origin | None:
    return None if origins is None else origins[index]


def _letter(event: c.Envelope, stage: str, error: str, origin: Origin | None) -> DeadLetter:
    """A dead letter of a decoded event: where it came from when known, else its source."""
    where, partition, offset = origin or (f"source:{event.source}", None, None)
    return DeadLetter(origin=where, partition=partition, offset=offset, stage=stage, error=error,
                      raw=c.encode(event), event_type=event.type, event_id=event.id)


def _refused(event: c.Envelope, error: str, origin: Origin | None = None) -> DeadLetter:
    return _letter(event, "validate", f"the store refused it: {error}", origin)


def _conflict(event: c.Envelope, why: str, origin: Origin | None) -> DeadLetter:
    return _letter(event, "conflict", f"event id {event.id!r} is already stored with different "
                   f"content ({why} differ); the stored event is kept", origin)


def _differences(first: c.Envelope, other: c.Envelope) -> str:
    """What differs between two events of one id, in words (for the dead letter)."""
    names = [name for name, a, b in (
        ("type", first.type, other.type), ("time", first.time_us, other.time_us),
        ("source", first.source, other.source), ("key", first.key, other.key),
        ("payload", first.payload, other.payload)) if a != b]
    return ", ".join(names) or "version"


def _stored_difference(event: c.Envelope, stored: list[Any]) -> str | None:
    """What differs between ``event`` and its stored ``event_log`` row, or None."""
    type_, time_us, source, key, rows, payload = stored
    names = [name for name, differs in (
        ("type", type_ != event.type), ("time", time_us != event.time_us),
        ("source", source != event.source), ("key", key != event.key),
        ("payload", type_ == event.type and (rows != tables.sample_rows(event.payload)
                                             or not _same_payload(payload, event.payload))),
    ) if differs]
    return ", ".join(names) or None


def _same_payload(stored: str | None, payload: c.Payload) -> bool:
    mine = tables.payload_json(payload)
    if stored is None or mine is None or stored == mine:
        return stored == mine
    try:  # stored by an older version (a field added since): compare as the payload reads now
        return bool(msgspec.json.decode(stored, type=type(payload)) == payload)
    except msgspec.MsgspecError:
        return False


def _storage_error(exc: duckdb.Error) -> StoreError:
    text = _first_line(exc)
    if "No space left" in text or "disk" in text.lower():
        return StoreError(f"the disk is full ({text}): free space, then run again; "
                          "nothing of the failed batch was kept")
    return StoreError(f"writing the batch failed ({text}); nothing of it was kept")


def open_writer(path: str | Path) -> StoreWriter:
    """Open (creating or upgrading) a store file for writing."""
    return StoreWriter(open_store(path))


def land(path: str | Path, events: Sequence[c.Envelope]) -> BatchResult:
    """Write a list of events to a store file in one batch (tests, small imports)."""
    writer = open_writer(path)
    try:
        return writer.write_batch(events)
    finally:
        writer.close()


def rollup_store(path: str | Path,
                 progress: Callable[[int, int], None] | None = None) -> dict[str, object]:
    """Roll up every hour of the store ``path`` (a file, or each file of a folder of shards)
    that is not stored exactly (``rollups.rebuild``): a store landed before rollups existed, or
    samples that landed late. The writer's lock is needed (stop the ingesters writing the
    files first). ``progress(done, total)``: hours, over the files so far."""
    started = time.monotonic()
    files: list[dict[str, object]] = []
    hours = rows = 0
    for file in store_files([path]):
        con = open_store(file)
        try:
            done = rollups.rebuild(con, _offset(progress, hours))
        except duckdb.Error as exc:
            raise StoreError(f"rolling up {file} failed ({_first_line(exc)}); the hours rolled "
                             "up before it are kept: free memory or disk, then run it again"
                             ) from exc
        finally:
            con.close()
        files.append({"db": str(file), **done})
        hours, rows = hours + done["hours"], rows + done["source_rows"]
    return {"db": str(path), "hours": hours, "source_rows": rows,
            "seconds": round(time.monotonic() - started, 1),
            **({"files": files} if Path(path).is_dir() else {})}


def _offset(progress: Callable[[int, int], None] | None,
            before: int) -> Callable[[int, int], None] | None:
    """``progress`` counting on from the ``before`` hours of the files done already."""
    if progress is None:
        return None
    report = progress
    return lambda done, total: report(before + done, before + total)
