"""Hourly rollups of the sample tables: the analysis' first-pass aggregates, kept at landing.

The analysis reads every GPU and every port through a few grouped scans (per GPU and 2-minute
bucket, per GPU over the window, per port and 10-minute bucket). On a 2,048-node day those scans
were 17 of the analysis' 30 s: DuckDB's grouping of ~350 M rows, not the reading. Each is a
sum of per-hour parts (every bucket lies inside one hour), so the writer computes an hour's part
once, when the hour has closed, and stores it (``rollup_<name>``); an analysis then reads the
stored hours and computes only the rest (the window's partial first and last hours, hours no
writer rolled up). The same idea as Prometheus' recording rules or TimescaleDB's continuous
aggregates, with one difference: a stored hour is never trusted blindly.

- **When.** The writer rolls an hour up once it has closed (the newest sample landed is
  ``GRACE_US`` past its end), and the hours still open when it closes (a simulation's last
  hour, an ingester stopped mid-hour).
- **Exact, or not used.** Each stored hour records the number of source rows it was computed
  from (``rollup_chunks.source_rows``) and the version of its SQL. A reader uses an hour only
  where both still match (``valid_chunks``: one count per hour, a tenth of a second a day); rows
  that landed late into a rolled-up hour make it stale, and the reader computes that hour from
  the samples. The writer rolls such an hour up again once it is quiet (``RollupKeeper``).
- **Derived, never a source.** Rollups are rebuilt from the samples (``fleetlog rollup`` for a
  store landed before they existed); dropping them loses nothing.
- **Shards.** A union of ingester shards reads each file's rollups of an hour where together
  they are the union's: each exact, no event of the hour landed by two files, no node (switch)
  with rows in two files (the partition of a rack moved between ingesters within the hour);
  otherwise the hour is computed from the samples.

The SQL here is the analysis' (analysis/detectors/scans.py reads it from here): the kernel keeps
what it pre-computes, the analysis says how to read it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import duckdb

from fleetlog.ingest import contract as c

US: Final = 1_000_000
CHUNK_S: Final = 3600  # a rollup covers an hour; every bucket width below divides it
CHUNK_US: Final = CHUNK_S * US
# An hour is rolled up once the newest sample landed is this far past its end: samples from
# several collectors arrive out of order by seconds to minutes.
GRACE_US: Final = 600 * US
# An hour that late samples made stale is rolled up again once nothing landed in it for this
# long (a replay of old data touches the same hour batch after batch).
QUIET_S: Final = 60.0

GPU_BUCKET_S: Final = 120  # the peer rules' first pass: fine enough to find a slow node in minutes
# The port rate rule's first pass: ten minutes (fewer groups is a cheaper scan; a port at half
# rate for a third of a bucket already sits below the candidate ratio).
PORT_BUCKET_S: Final = 600
BUSY_UTIL: Final = 80.0  # clock and power compare only while the GPU works (not comm/ckpt)
THERMAL_BITS: Final = c.THROTTLE_SW_THERMAL | c.THROTTLE_HW_THERMAL
SLOW_BITS: Final = c.THROTTLE_HW_SLOWDOWN | c.THROTTLE_POWER_BRAKE
# Counters whose increase the detectors read: name -> column.
GPU_COUNTERS: Final = {"sbe": "ecc_sbe_vol_total", "dbe": "ecc_dbe_vol_total",
                       "sram": "sram_ecc_total", "nvl": "nvlink_crc_flit_errors"}
PORT_COUNTERS: Final = {"sym": "symbol_error", "rcv": "rcv_errors", "downed": "link_downed",
                        "ler": "link_error_recovery"}


def throttle_sql(column: str = "throttle_reasons") -> str:
    return f"CAST(coalesce({column}, 0) AS UBIGINT)"


def busy_sql(prefix: str = "") -> str:
    """SQL: the scrape counts as busy (utilization at least ``BUSY_UTIL``, no thermal bit):
    only then are clock and power compared with peers (not in a communication, checkpoint or
    thermal phase). ``prefix`` is the table alias with its dot."""
    return (f"{prefix}util_pct >= {BUSY_UTIL} "
            f"AND ({throttle_sql(prefix + 'throttle_reasons')} & {THERMAL_BITS}) = 0")


# Per GPU and 2-minute bucket: the busy SM clock and power, the PCIe replay increase, the
# slow-bit scrapes, and the node's peer medians at that bucket (``node_clk``, ``node_pw``,
# ``busy``; ``lead`` marks one row per node and bucket), computed on the grouped rows in the
# same query (~1 s a day in DuckDB where polars took ~3 s). Integer division, not time_bucket:
# several times faster over a day of scrapes.
GPU_BUCKETS_SQL: Final = (
    "WITH g AS (SELECT node, gpu, b, avg(sm_clock_mhz) FILTER (WHERE busy) AS clk, "
    "avg(power_w) FILTER (WHERE busy) AS pw, max(pcie_replays) - min(pcie_replays) AS rp, "
    "count(*) FILTER (WHERE slow) AS slow_bits FROM ("
    # Each row's flags computed once, not in every aggregate's FILTER (~10 % of the scan).
    f"SELECT node, gpu, epoch_us(ts) // {GPU_BUCKET_S * US} * {GPU_BUCKET_S * US} AS b, "
    f"sm_clock_mhz, power_w, pcie_replays, {busy_sql()} AS busy, "
    f"({throttle_sql()} & {SLOW_BITS}) <> 0 AS slow "
    "FROM gpu_samples WHERE {where}) GROUP BY ALL), "
    "m AS (SELECT node, b, median(clk) AS node_clk, median(pw) AS node_pw, "
    "count(clk) AS busy, min(gpu) AS lead FROM g GROUP BY ALL) "
    "SELECT g.*, m.node_clk, m.node_pw, m.busy, g.gpu = m.lead AS lead "
    "FROM g JOIN m ON g.node = m.node AND g.b = m.b"
)

# Per GPU over the hour: what the summary of a whole window is rolled up from (the sum of the
# counts, the first time, each counter's lowest and highest value, the flags, every throttle bit
# seen, the hottest temperature: only what a detector reads).
GPU_HOURS_SQL: Final = (
    "SELECT node, gpu, count(*) AS n, epoch_us(min(ts)) AS first_us, "
    + "".join(f"min({col}) AS {name}_lo, max({col}) AS {name}_hi, "
              for name, col in GPU_COUNTERS.items())
    + "max(row_remap_pending) AS rrp, max(row_remap_failure) AS rrf, "
    f"bit_or({throttle_sql()}) AS throttle, max(gpu_temp_c) AS tmax "
    "FROM gpu_samples WHERE {where} GROUP BY node, gpu"
)

# Per port and 10-minute bucket: the data counters' increases and each error counter's lowest
# and highest value and the lowest link state.
PORT_BUCKETS_SQL: Final = (
    f"SELECT switch, port, epoch_us(ts) // {PORT_BUCKET_S * US} * {PORT_BUCKET_S * US} AS b, "
    "max(xmit_data) - min(xmit_data) AS x, max(rcv_data) - min(rcv_data) AS r, "
    + "".join(f"min({col}) AS {name}_lo, max({col}) AS {name}_hi, "
              for name, col in PORT_COUNTERS.items())
    + "min(link_state) AS min_state FROM port_samples WHERE {where} GROUP BY ALL"
)


@dataclass(frozen=True)
class Rollup:
    name: str  # the stored table is rollup_<name>
    source: str  # the public view it aggregates
    sql: str  # a grouped SELECT over ``source`` whose WHERE is ``{where}``
    key: str  # no two files of a union may both hold rows of one of these in an hour

    @property
    def table(self) -> str:
        return f"rollup_{self.name}"

    @property
    def version(self) -> str:
        """Changes with the SQL: hours stored by another version are not read."""
        return hashlib.sha256(self.sql.encode()).hexdigest()[:16]


ROLLUPS: Final = {r.name: r for r in (
    Rollup("gpu_buckets", "gpu_samples", GPU_BUCKETS_SQL, "node"),
    Rollup("gpu_hours", "gpu_samples", GPU_HOURS_SQL, "node"),
    Rollup("port_buckets", "port_samples", PORT_BUCKETS_SQL, "switch"),
)}
SOURCES: Final = {"gpu_samples_raw": "gpu_samples", "port_samples_raw": "port_samples"}
TABLES: Final = ("rollup_chunks", *(r.table for r in ROLLUPS.values()))

# Schema step 3 (ingest/store/schema.py): the record of which hours are stored, from how many
# source rows, by which version. The rollup tables themselves are made from their SQL.
CHUNKS_TABLE: Final = """CREATE TABLE rollup_chunks (
    name VARCHAR NOT NULL, chunk_us BIGINT NOT NULL, version VARCHAR NOT NULL,
    source_rows BIGINT NOT NULL, rolled_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (name, chunk_us))"""


def chunk_where(lo_us: int, hi_us: int, column: str = "ts") -> str:
    """The time predicate of one chunk (literal times: the zone maps skip the other hours)."""
    return f"{column} >= make_timestamptz({lo_us}) AND {column} < make_timestamptz({hi_us})"


def stores(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The schemas (``"db".main``) of the store files behind ``con``: the shards of a union
    (``open_union`` attaches them as shard0, shard1, ...), else the file ``con`` opened."""
    names = [str(name) for (name,) in con.execute(
        "SELECT database_name FROM duckdb_databases() WHERE regexp_full_match(database_name, "
        "'shard[0-9]+') ORDER BY database_oid").fetchall()]
    if not names:
        names = [str(con.execute("SELECT current_database()").fetchall()[0][0])]
    return [f'"{name}".main' for name in names]


def source_counts(con: duckdb.DuckDBPyConnection, source: str, lo_us: int,
                  hi_us: int) -> dict[int, int]:
    """Rows of ``source`` (a table or view on ``con``) per hour in ``[lo_us, hi_us)``
    (hour-aligned): a count, ~0.01 s an hour of 2,048 nodes."""
    rows = con.execute(
        f"SELECT epoch_us(ts) // {CHUNK_US} * {CHUNK_US}, count(*) FROM {source} "
        f"WHERE {chunk_where(lo_us, hi_us)} GROUP BY 1").fetchall()
    return {int(chunk): int(n) for chunk, n in rows}


def shard_counts(con: duckdb.DuckDBPyConnection, source: str, lo_us: int,
                 hi_us: int) -> list[dict[int, int]]:
    """``source_counts`` of each store file behind ``con`` (``stores``), from its raw table:
    what its writer counted when it rolled an hour up."""
    raw = next(table for table, view in SOURCES.items() if view == source)
    return [source_counts(con, f"{schema}.{raw}", lo_us, hi_us) for schema in stores(con)]


def valid_chunks(con: duckdb.DuckDBPyConnection, rollup: Rollup, chunks: Iterable[int],
                 counts: list[dict[int, int]] | None = None) -> list[int]:
    """Of the hours ``chunks`` (their starts, µs), those whose stored rollups are exact and
    together are the store's: every file holding samples of the hour stored it by this
    version from as many rows as it holds now (``counts``: ``shard_counts``, when the caller
    has them), and, in a union of shards, no event of the hour is in two files and no node
    (switch) in two files' rows, so the files' groups are the union's groups."""
    wanted = sorted(set(chunks))
    schemas = stores(con)
    if not wanted:
        return []
    if counts is None:
        counts = shard_counts(con, rollup.source, wanted[0], wanted[-1] + CHUNK_US)
    stored = [_stored_rows(con, schema, rollup, wanted) for schema in schemas]
    exact = [chunk for chunk in wanted
             if any(rows.get(chunk) for rows in counts)
             and all(not rows.get(chunk) or rows[chunk] == kept.get(chunk)
                     for rows, kept in zip(counts, stored, strict=True))]
    if len(schemas) == 1 or not exact:
        return exact
    if _has_duplicates(con):  # an event two shards landed is read once: count the union
        union = source_counts(con, rollup.source, exact[0], exact[-1] + CHUNK_US)
        exact = [chunk for chunk in exact
                 if union.get(chunk, 0) == sum(rows.get(chunk, 0) for rows in counts)]
    shared = _shared_keys(con, rollup, [i for i, kept in enumerate(stored) if kept], exact)
    return [chunk for chunk in exact if chunk not in shared]


def _stored_rows(con: duckdb.DuckDBPyConnection, schema: str, rollup: Rollup,
                 wanted: list[int]) -> dict[int, int]:
    """The hours of ``wanted`` the file ``schema`` keeps of ``rollup`` at this version, and the
    source rows each was computed from."""
    if not (_has_table(con, schema, "rollup_chunks") and _has_table(con, schema, rollup.table)):
        return {}
    return {int(chunk): int(rows) for chunk, rows in con.execute(
        f"SELECT chunk_us, source_rows FROM {schema}.rollup_chunks WHERE name = ? "
        "AND version = ? AND chunk_us >= ? AND chunk_us <= ?",
        [rollup.name, rollup.version, wanted[0], wanted[-1]]).fetchall()}


def _has_duplicates(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the union behind ``con`` found events landed by two shards (database.py)."""
    if not con.execute("SELECT count(*) FROM duckdb_tables() WHERE temporary "
                       "AND table_name = 'fleetlog_duplicates'").fetchall()[0][0]:
        return False
    return bool(con.execute("SELECT count(*) FROM fleetlog_duplicates").fetchall()[0][0])


def _shared_keys(con: duckdb.DuckDBPyConnection, rollup: Rollup, holders: list[int],
                 chunks: list[int]) -> set[int]:
    """The hours in which a node (for the GPU rollups; a switch for the port one) has rows in
    two files: its groups there, and its node's medians, span files (a partition that moved
    between ingesters within the hour)."""
    if len(holders) < 2:
        return set()
    schemas = stores(con)
    key = rollup.key
    parts = " UNION ALL ".join(
        f"SELECT {i} AS f, chunk_us, {key} FROM {schemas[i]}.{rollup.table} "
        f"WHERE chunk_us >= {chunks[0]} AND chunk_us <= {chunks[-1]}" for i in holders)
    return {int(chunk) for (chunk,) in con.execute(
        f"SELECT DISTINCT chunk_us FROM (SELECT chunk_us, {key} FROM ({parts}) "
        f"GROUP BY ALL HAVING count(DISTINCT f) > 1)").fetchall()}


def stored_sql(con: duckdb.DuckDBPyConnection, rollup: Rollup, lo_us: int, hi_us: int) -> str:
    """SQL reading the stored rows of the hours in ``[lo_us, hi_us)`` (valid ones:
    ``valid_chunks``) from every file that keeps them, the rollup's columns without the hour."""
    parts = [f"SELECT * EXCLUDE (chunk_us) FROM {schema}.{rollup.table} "
             f"WHERE chunk_us >= {lo_us} AND chunk_us < {hi_us}"
             for schema in stores(con) if _has_table(con, schema, rollup.table)]
    return " UNION ALL ".join(parts)


def _has_table(con: duckdb.DuckDBPyConnection, where: str, table: str) -> bool:
    database = where.split(".")[0].strip('"')
    return bool(con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = ? AND schema_name = 'main' "
        "AND table_name = ?", [database, table]).fetchall()[0][0])


def roll(con: duckdb.DuckDBPyConnection, chunk: int) -> int:
    """Compute and store every rollup of the hour starting at ``chunk`` (replacing what was
    stored for it), in one transaction on the writer's connection; returns the source rows."""
    where = chunk_where(chunk, chunk + CHUNK_US)
    counts: dict[str, int] = {}
    con.execute("BEGIN TRANSACTION")
    try:
        for rollup in ROLLUPS.values():
            if rollup.source not in counts:
                counts[rollup.source] = int(con.execute(
                    f"SELECT count(*) FROM {rollup.source} WHERE {where}").fetchall()[0][0])
            _ensure_table(con, rollup)
            con.execute(f"DELETE FROM {rollup.table} WHERE chunk_us = {chunk}")
            con.execute(f"INSERT INTO {rollup.table} SELECT {chunk} AS chunk_us, * "
                        f"FROM ({rollup.sql.format(where=where)})")
            con.execute("INSERT OR REPLACE INTO rollup_chunks "
                        "VALUES (?, ?, ?, ?, current_timestamp)",
                        [rollup.name, chunk, rollup.version, counts[rollup.source]])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return sum(counts.values())


def _ensure_table(con: duckdb.DuckDBPyConnection, rollup: Rollup) -> None:
    """Make ``rollup``'s table from its SQL; a table of another version is dropped with its
    record (its rows are no longer what the analysis reads)."""
    old = con.execute("SELECT count(*) FROM rollup_chunks WHERE name = ? AND version <> ?",
                      [rollup.name, rollup.version]).fetchall()[0][0]
    if old:
        con.execute(f"DROP TABLE IF EXISTS {rollup.table}")
        con.execute("DELETE FROM rollup_chunks WHERE name = ?", [rollup.name])
    con.execute(f"CREATE TABLE IF NOT EXISTS {rollup.table} AS SELECT 0::BIGINT AS chunk_us, * "
                f"FROM ({rollup.sql.format(where='false')})")


def unrolled_chunks(con: duckdb.DuckDBPyConnection) -> list[int]:
    """Every hour of the store's samples that is not stored exactly (missing, another version,
    stale)."""
    bounds = con.execute(
        "SELECT min(lo), max(hi) FROM (SELECT epoch_us(min(ts)) AS lo, epoch_us(max(ts)) AS hi "
        "FROM gpu_samples UNION ALL SELECT epoch_us(min(ts)), epoch_us(max(ts)) "
        "FROM port_samples)").fetchall()[0]
    if bounds[0] is None:
        return []
    first, last = int(bounds[0]) // CHUNK_US * CHUNK_US, int(bounds[1]) // CHUNK_US * CHUNK_US
    counts = {source: shard_counts(con, source, first, last + CHUNK_US)
              for source in SOURCES.values()}
    chunks = sorted({chunk for files in counts.values() for part in files for chunk in part})
    exact = set(chunks)
    for rollup in ROLLUPS.values():
        exact &= set(valid_chunks(con, rollup, chunks, counts[rollup.source]))
    return [chunk for chunk in chunks if chunk not in exact]


def rebuild(con: duckdb.DuckDBPyConnection,
            progress: Callable[[int, int], None] | None = None) -> dict[str, int]:
    """Roll up every hour not stored exactly (a store landed before rollups, or after samples
    landed late; no writer may be open on it); ``progress(done, total)`` after each hour."""
    todo = unrolled_chunks(con)
    rows = 0
    for done, chunk in enumerate(todo, 1):
        rows += roll(con, chunk)
        if progress is not None:
            progress(done, len(todo))
    return {"hours": len(todo), "source_rows": rows}


class RollupKeeper:
    """The writer's side: told the time span of the samples each committed batch landed, it
    rolls up every hour that closed (the newest sample ``GRACE_US`` past its end), and again,
    once quiet for ``QUIET_S``, an hour that samples landed into after it was rolled up."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self.newest: int | None = None  # the newest sample time landed (µs)
        self.oldest_open: int | None = None  # the first hour not rolled up by this writer
        self.stale: dict[int, float] = {}  # hour -> monotonic time samples last landed in it
        self.rolled = 0
        self.failed = 0  # hours whose rollup failed (left to the samples)
        self.last_error: str | None = None

    def _roll(self, chunk: int) -> None:
        """Roll one hour up. A rollup only saves readers time: one that fails (DuckDB out of
        the writer's memory limit, say) leaves the hour to be computed from its samples, is
        said once on stderr, and never fails the landing (the batches are committed)."""
        try:
            roll(self.con, chunk)
        except duckdb.Error as exc:
            self.failed += 1
            self.last_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if self.failed == 1:
                hour = datetime.fromtimestamp(chunk / US, UTC).isoformat()
                logging.getLogger(__name__).warning(
                    "rolling up the hour from %s failed (%s): readers compute it from the "
                    "samples; `fleetlog rollup --db FILE` rolls it up later", hour,
                    self.last_error)
        else:
            self.rolled += 1

    def landed(self, spans: Iterable[tuple[int, int]]) -> None:
        """After a commit: ``spans`` are (oldest, newest) sample times of each sample table."""
        now = time.monotonic()
        for lo, hi in spans:
            if self.oldest_open is None:
                # After the hours stored before (an earlier writer's), else the first landed.
                (stored,), = self.con.execute(
                    "SELECT max(chunk_us) FROM rollup_chunks").fetchall()
                self.oldest_open = (lo // CHUNK_US * CHUNK_US if stored is None
                                    else int(stored) + CHUNK_US)
            self.newest = hi if self.newest is None else max(self.newest, hi)
            for chunk in range(lo // CHUNK_US * CHUNK_US, hi + 1, CHUNK_US):
                if chunk < self.oldest_open:  # rolled up already: stale now
                    self.stale[chunk] = now
        if self.newest is None or self.oldest_open is None:
            return
        closed = (self.newest - GRACE_US) // CHUNK_US * CHUNK_US  # the first hour still open
        if self.oldest_open < closed:
            # Only the hours that hold samples (an import of sparse old data spans months).
            counts = [source_counts(self.con, source, self.oldest_open, closed)
                      for source in SOURCES.values()]
            for chunk in sorted({chunk for part in counts for chunk in part}):
                self.stale.pop(chunk, None)
                self._roll(chunk)
            self.oldest_open = closed
        for chunk, touched in sorted(self.stale.items()):
            if now - touched >= QUIET_S:
                del self.stale[chunk]
                self._roll(chunk)

    def close(self) -> None:
        """The writer is done: roll up the hours still open and the stale ones waiting for quiet.
        An open hour rolled up now is exact for what the file holds; should samples land in it
        later, it is stale until a writer rolls it up again (readers check, see the module)."""
        todo = set(self.stale)
        if self.oldest_open is not None and self.newest is not None:
            todo |= {chunk for source in SOURCES.values() for chunk in source_counts(
                self.con, source, self.oldest_open, self.newest // CHUNK_US * CHUNK_US + CHUNK_US)}
        for chunk in sorted(todo):
            self._roll(chunk)
        self.stale.clear()
        self.oldest_open = None
