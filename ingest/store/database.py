"""Opening the store: one file for writing, or the union of a group's shards for reading.

``open_store`` opens (and for writers creates or upgrades, ``store.schema``) one DuckDB file;
``open_union`` reads several shards as one store, keeping the first copy of an event that two
shards both landed. DuckDB's errors are translated here, once, into ``StoreError``.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import itertools
import os
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from fleetlog.ingest import contract
from fleetlog.ingest.store.schema import (
    COLUMNS_ADDED,
    PUBLIC_VIEWS,
    SCHEMA_VERSION,
    StoreError,
    StoreLocked,
    StoreMissing,
    check_catalog,
    ensure_schema,
)


def _translate(exc: duckdb.Error, path: Path) -> StoreError:
    text = str(exc)
    if "lock" in text.lower() or "already attached" in text.lower():
        return StoreLocked(
            f"{path} is locked by another process (an ingester?): stop it, or read a copy "
            "of the file"
        )
    return StoreError(f"cannot open {path}: {text.splitlines()[0] if text else exc!r}")


def open_store(path: str | Path, *, read_only: bool = False,
               external_access: bool = False) -> duckdb.DuckDBPyConnection:
    """Open (and for writers, create or upgrade) a store file.

    Readers get ``open_union`` of the one file: the public views defined by fleetlog, file access
    off and the configuration locked. Writers get the file's public views replaced by fleetlog's
    unless they are exactly fleetlog's, and file access off (DuckDB cannot switch it on again)
    unless ``external_access``: only a writer that publishes snapshots (``ATTACH`` of the copy)
    asks for it, and such a writer runs only fleetlog's SQL over tables ``check_catalog`` checked.
    """
    path = Path(path)
    if read_only:
        if not path.exists():
            raise StoreMissing(
                f"no database at {path}: run `fleetlog ingest` or `fleetlog demo` first")
        return _open_reader([path])
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect(str(path))
    except duckdb.Error as exc:
        raise _translate(exc, path) from exc
    try:
        con.execute("SET TimeZone = 'UTC'")
        if not external_access:
            _no_file_access(con)
        ensure_schema(con)
    except BaseException:
        con.close()
        raise
    return con


def _no_file_access(con: duckdb.DuckDBPyConnection) -> None:
    """No SQL on this connection reads or writes a file, nor loads code, from here on."""
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute("SET enable_external_access = false")


# Where readers spill: one private folder per process (mode 0700, removed at exit) holding one
# sub-folder per connection, which DuckDB makes when it first spills and removes on close.
# Not DuckDB's default (``<file>.tmp`` beside the store, ``.tmp`` in the current folder for a
# union): DuckDB lets SQL read and write its temp folder even with file access off.
_spill_root: list[Path] = []
_spill_count = itertools.count()


def _spill_directory() -> str:
    if not _spill_root or not _spill_root[0].is_dir():
        root = Path(tempfile.mkdtemp(prefix="fleetlog-spill-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        _spill_root[:] = [root]
    return str(_spill_root[0] / f"{os.getpid()}-{next(_spill_count)}")


def store_files(paths: Sequence[str | Path]) -> list[Path]:
    """Expand ``--db`` arguments: files as given, folders to the ``*.duckdb`` files inside."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            shards = sorted(path.glob("*.duckdb"))
            if not shards:
                raise StoreMissing(f"no *.duckdb files in folder {path}")
            files.extend(shards)
        elif path.exists():
            files.append(path)
        else:
            raise StoreMissing(
                f"no database at {path}: run `fleetlog ingest` or `fleetlog demo` first"
            )
    if not files:
        raise StoreMissing("no database given: pass --db PATH (a file or a folder of shards)")
    return files


def open_union(paths: Sequence[str | Path], *, memory_limit: str | None = None,
               spill: bool = True) -> duckdb.DuckDBPyConnection:
    """Read one or several store files (ingester shards) as one: every public view is their union.

    The files are attached read-only to an in-memory database; then file access is switched
    off, the public views are defined as TEMP views from ``PUBLIC_VIEWS`` (the files' own view
    SQL never runs unasked) and the configuration is locked, so no SQL on the connection reads or
    writes a file, nor changes a setting. ``memory_limit`` caps DuckDB's memory; ``spill=False``
    gives DuckDB no temp folder at all (a query that outgrows the limit fails instead of
    spilling), else it spills to a private folder (``_spill_directory``).
    """
    return _open_reader(store_files(paths), memory_limit=memory_limit, spill=spill)


def _open_reader(files: Sequence[Path], *, memory_limit: str | None = None,
                 spill: bool = True) -> duckdb.DuckDBPyConnection:
    if memory_limit is not None and not valid_memory_limit(memory_limit):
        raise StoreError(f"memory limit {memory_limit!r} is not a size like 512MB or 2GB")
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"SET temp_directory = '{_quote(_spill_directory()) if spill else ''}'")
        if memory_limit is not None:
            con.execute(f"SET memory_limit = '{memory_limit.strip()}'")
        for index, path in enumerate(files):
            try:
                con.execute(f"ATTACH '{_quote(str(path))}' AS shard{index} (READ_ONLY)")
            except duckdb.Error as exc:
                raise _translate(exc, path) from exc
        _no_file_access(con)  # ATTACH was the last file fleetlog opens through DuckDB
        for index, path in enumerate(files):
            check_catalog(con, f"shard{index}", str(path))
        _define_views(con, files)
        # The user's CREATE TABLE without a database goes to the first file, which refuses it.
        con.execute("USE shard0")
        con.execute("SET lock_configuration = true")
    except BaseException:
        con.close()
        raise
    return con


def reader_cursor(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection | None:
    """A second connection to the store behind ``con`` that reads what ``con`` reads, for
    queries run in parallel with it (DuckDB runs one call at a time per connection). A cursor
    does not see the TEMP views ``open_union`` defines, so they are made again on it, in their
    order. None where that cannot be done: the union of several shards also keeps TEMP tables
    (the cross-shard duplicates), which are ``con``'s own."""
    (temporary_tables,), = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE temporary").fetchall()
    if temporary_tables:
        return None
    cursor = con.cursor()
    for (sql,) in con.execute("SELECT sql FROM duckdb_views() WHERE temporary AND NOT internal "
                              "ORDER BY view_oid").fetchall():
        cursor.execute(sql)
    return cursor


def _define_views(con: duckdb.DuckDBPyConnection, files: Sequence[Path]) -> None:
    """The raw tables as the union of the shards, and the public views over them."""
    try:
        if len(files) > 1:
            _cross_shard_duplicates(con, files)
        # The raw tables are read as their union, then the public views are built on that union
        # exactly as in one file: "latest per entity" views (nodes, incidents) see every shard.
        for name in (*_EVENT_TABLES, "dead_letters_raw", "ingest_offsets"):
            parts = [f"SELECT * FROM {_shard_table(con, i, name)}"
                     f"{_keep_first_copy(name, i) if len(files) > 1 else ''}"
                     for i in range(len(files))]
            con.execute(f"CREATE TEMP VIEW {name} AS {' UNION ALL BY NAME '.join(parts)}")
        con.execute("CREATE TEMP VIEW xid_catalog AS SELECT * FROM shard0.main.xid_catalog")
        for name, body in PUBLIC_VIEWS.items():
            con.execute(f"CREATE TEMP VIEW {name} AS {body}")
    except duckdb.Error as exc:
        first = str(exc).splitlines()[0] if str(exc) else repr(exc)
        where = files[0] if len(files) == 1 else files[0].parent
        raise StoreError(f"cannot read {where} as a fleetlog store: {first}") from exc


# Raw tables whose every row names the event it came from (dead letters may have no event).
_EVENT_TABLES: Final = (
    "event_log", "gpu_samples_raw", "port_samples_raw", "xid_raw", "host_events_raw",
    "job_events_raw", "inventory_raw", "truth_raw", "incidents_raw", "recommendations_raw")


def _cross_shard_duplicates(con: duckdb.DuckDBPyConnection, files: Sequence[Path]) -> None:
    """``fleetlog_duplicates`` for these shards: found once per state of the files, then read.

    Finding them reads every event id of every shard (seconds per 10 M events), and every
    analysis, SQL or report command opens the store again; the shards of a finished hour do not
    change. The result is kept beside the shards (``.fleetlog/``), keyed by each file's path,
    size and modification time: a shard written since is a different key. Where the folder is
    not writable, it is found on every open, as before.
    The cache is read and written by pyarrow, not DuckDB: the connection has no file access.
    """
    cache = files[0].parent / ".fleetlog" / f"duplicates-{_shards_key(files)}.parquet"
    if cache.exists():
        try:
            found = pq.read_table(cache, schema=_DUPLICATES)
        except (OSError, pa.ArrowException):
            pass  # unreadable (a crash mid-write, a newer format): find them again
        else:
            con.register("fleetlog_duplicates_cached", found)
            try:
                con.execute("CREATE TEMP TABLE fleetlog_duplicates AS "
                            "SELECT * FROM fleetlog_duplicates_cached")
            finally:
                con.unregister("fleetlog_duplicates_cached")
            return
    _find_cross_shard_duplicates(con, len(files))
    with contextlib.suppress(OSError, pa.ArrowException, duckdb.Error):
        cache.parent.mkdir(exist_ok=True)
        partial = cache.with_name(f"{cache.name}.{os.getpid()}.partial")
        table = con.sql("SELECT event_id, keep FROM fleetlog_duplicates").to_arrow_table()
        pq.write_table(table.cast(_DUPLICATES), partial)
        partial.replace(cache)  # atomic: another reader sees all of it or none
        for stale in sorted(cache.parent.glob("duplicates-*.parquet"),
                            key=lambda f: f.stat().st_mtime)[:-_KEEP_UNION_CACHES]:
            stale.unlink(missing_ok=True)


_DUPLICATES: Final = pa.schema([("event_id", pa.string()), ("keep", pa.int32())])
_KEEP_UNION_CACHES: Final = 16  # shard sets read from one folder (hours, subsets)
_UNION_CACHE_FORMAT: Final = 1  # bump when the duplicates table changes meaning


def _shards_key(files: Sequence[Path]) -> str:
    parts = [str(_UNION_CACHE_FORMAT)]
    for path in files:
        stat = path.stat()
        parts.append(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ino}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]


def _find_cross_shard_duplicates(con: duckdb.DuckDBPyConnection, shards: int) -> None:
    """Events landed by more than one shard, and the shard whose copy is read.

    Each shard lands an event once, but an event sent twice can reach two shards when its
    partition moved between them in between (a replay, or a retry across a rebalance). Reading
    the shards as one store keeps the copy of the first shard that has it; in the usual case the
    table is empty and the anti-joins below cost nothing.

    Each shard holds an id once, so an id seen twice is in two shards. Grouping 64-bit hashes
    first and comparing the ids only of the (rare) colliding hashes is twice as fast as grouping
    the ids: ~3 s for 10 M events on a busy 2-core machine, the price of reading shards as one.
    """
    hashes = " UNION ALL ".join(
        f"SELECT hash(event_id) AS h FROM shard{i}.main.event_log" for i in range(shards))
    con.execute("CREATE TEMP TABLE fleetlog_shared_hashes AS "
                f"SELECT h FROM ({hashes}) GROUP BY h HAVING count(*) > 1")
    ids = " UNION ALL ".join(
        f"SELECT event_id, {i} AS shard FROM shard{i}.main.event_log "
        "WHERE hash(event_id) IN (SELECT h FROM fleetlog_shared_hashes)" for i in range(shards))
    con.execute(
        "CREATE TEMP TABLE fleetlog_duplicates AS SELECT event_id, min(shard) AS keep "
        f"FROM ({ids}) GROUP BY event_id HAVING count(*) > 1")


def _shard_table(con: duckdb.DuckDBPyConnection, shard: int, name: str) -> str:
    """A shard's raw table as the current schema has it (``COLUMNS_ADDED``)."""
    schema = f"shard{shard}.main"
    table = f"{schema}.{name}"
    if name not in COLUMNS_ADDED:
        return table
    column, older = COLUMNS_ADDED[name]
    present = con.execute(
        "SELECT count(*) FROM duckdb_columns() WHERE database_name = ? AND table_name = ? "
        "AND column_name = ?", [f"shard{shard}", name, column]).fetchone()
    return table if present and present[0] else older.format(t=table, s=schema)


def _keep_first_copy(name: str, shard: int) -> str:
    if name not in _EVENT_TABLES:
        return ""
    return (" WHERE event_id NOT IN (SELECT event_id FROM fleetlog_duplicates "
            f"WHERE keep <> {shard})")


def _quote(text: str) -> str:
    return text.replace("'", "''")


def table_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Row counts of the public views, for summaries and tests."""
    counts: dict[str, int] = {}
    for name in PUBLIC_VIEWS:
        row = con.execute(f"SELECT count(*) FROM {name}").fetchone()
        counts[name] = int(row[0]) if row else 0
    return counts


def describe_store(path: str | Path) -> dict[str, object]:
    """Create or upgrade a store and summarise it (path, schema version, public view rows)."""
    con = open_store(path)
    try:
        return {
            "db": str(Path(path).resolve()),
            "schema_version": SCHEMA_VERSION,
            "views": table_counts(con),
        }
    finally:
        con.close()


def decode_stored(
    event_id: str, kind: str, version: int, ts_us: int, source: str, key: str,
    payload: str | None,
) -> contract.Envelope | None:
    """An ``event_log`` row (non-sample event) back into its event, through the contract's
    decoder so old schema versions are upcast exactly as on the wire; None if it no longer
    decodes."""
    decoded = contract.decode_parts(event_id, kind, version, ts_us, source, key,
                                    (payload or "{}").encode())
    return decoded if isinstance(decoded, contract.Envelope) else None


_SIZE = re.compile(r"^\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$", re.IGNORECASE)


def valid_memory_limit(text: str) -> bool:
    return bool(_SIZE.match(text.strip()))


def open_store_waiting(db: Path, wait_s: float = 5.0,
                       memory_limit: str | None = None) -> duckdb.DuckDBPyConnection:
    """Open for writing; a sibling ingester may hold a read lock for a moment, so retry.

    ``memory_limit`` (e.g. ``"512MB"``) caps DuckDB's buffer pool for a long-running writer.
    """
    if memory_limit is not None and not valid_memory_limit(memory_limit):
        raise StoreError(f"memory limit {memory_limit!r} is not a size like 512MB or 2GB")
    deadline = time.monotonic() + wait_s
    while True:
        try:
            # File access stays on: the writer's snapshots ATTACH their copy (Snapshotter).
            con = open_store(db, external_access=True)
            break
        except StoreLocked:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    if memory_limit is not None:
        con.execute(f"SET memory_limit = '{memory_limit.strip()}'")
    return con
