"""Opening the store: one file for writing, or the union of a group's shards for reading.

``open_store`` opens (and for writers creates or upgrades, ``store.schema``) one DuckDB file;
``open_union`` reads several shards as one store, keeping the first copy of an event that two
shards both landed. DuckDB's errors are translated here, once, into ``StoreError``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import duckdb
import msgspec

from fleetlog.ingest import contract
from fleetlog.ingest.store.schema import (
    COLUMNS_ADDED,
    PUBLIC_VIEWS,
    SCHEMA_VERSION,
    StoreError,
    StoreLocked,
    StoreMissing,
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


def open_store(path: str | Path, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open (and for writers, create or upgrade) a store file."""
    path = Path(path)
    if read_only and not path.exists():
        raise StoreMissing(f"no database at {path}: run `fleetlog ingest` or `fleetlog demo` first")
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect(str(path), read_only=read_only)
    except duckdb.Error as exc:
        raise _translate(exc, path) from exc
    con.execute("SET TimeZone = 'UTC'")
    if not read_only:
        ensure_schema(con)
    return con


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


def open_union(paths: Sequence[str | Path]) -> duckdb.DuckDBPyConnection:
    """Read several store files (ingester shards) as one: every public view is their union."""
    files = store_files(paths)
    if len(files) == 1:
        return open_store(files[0], read_only=True)
    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")
    for index, path in enumerate(files):
        try:
            con.execute(f"ATTACH '{_quote(str(path))}' AS shard{index} (READ_ONLY)")
        except duckdb.Error as exc:
            raise _translate(exc, path) from exc
    _cross_shard_duplicates(con, files)
    # The raw tables are read as their union, then the public views are built on that union
    # exactly as in one file: "latest per entity" views (nodes, incidents) see every shard.
    for name in (*_EVENT_TABLES, "dead_letters_raw", "ingest_offsets"):
        parts = [f"SELECT * FROM {_shard_table(con, i, name)}{_keep_first_copy(name, i)}"
                 for i in range(len(files))]
        con.execute(f"CREATE TEMP VIEW {name} AS {' UNION ALL BY NAME '.join(parts)}")
    con.execute("CREATE TEMP VIEW xid_catalog AS SELECT * FROM shard0.main.xid_catalog")
    for name, body in PUBLIC_VIEWS.items():
        con.execute(f"CREATE TEMP VIEW {name} AS {body}")
    return con


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
    """
    cache = files[0].parent / ".fleetlog" / f"duplicates-{_shards_key(files)}.parquet"
    if cache.exists():
        try:
            con.execute("CREATE TEMP TABLE fleetlog_duplicates AS "
                        f"SELECT * FROM read_parquet('{_quote(str(cache))}')")
            return
        except duckdb.Error:
            pass  # unreadable (a crash mid-write, a newer format): find them again
    _find_cross_shard_duplicates(con, len(files))
    with contextlib.suppress(OSError, duckdb.Error):
        cache.parent.mkdir(exist_ok=True)
        partial = cache.with_name(f"{cache.name}.{os.getpid()}.partial")
        con.execute(f"COPY fleetlog_duplicates TO '{_quote(str(partial))}' (FORMAT parquet)")
        partial.replace(cache)  # atomic: another reader sees all of it or none
        for stale in sorted(cache.parent.glob("duplicates-*.parquet"),
                            key=lambda f: f.stat().st_mtime)[:-_KEEP_UNION_CACHES]:
            stale.unlink(missing_ok=True)


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
    wire = msgspec.json.encode({"id": event_id, "type": kind, "v": version, "time_us": ts_us,
                                "source": source, "key": key,
                                "payload": msgspec.Raw((payload or "{}").encode())})
    decoded = contract.decode(wire)
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
            con = open_store(db)
            break
        except StoreLocked:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    if memory_limit is not None:
        con.execute(f"SET memory_limit = '{memory_limit.strip()}'")
    return con
