"""The shared grouped scans of the sample tables: each computed once per analysis and cached.

A 2,048-node day is ~140 M GPU rows and ~210 M port rows: every pass over either costs seconds,
and pulling raw samples into Python costs gigabytes. So the detectors that need aggregates of
every GPU or every port (presence, counters, thermal and peers over ``gpu_samples``; error
counters and data rates over ``port_samples``) take them from these grouped scans, computed in
DuckDB (GROUP BY, only the columns needed) and kept for the analysis (``ctx.shared``):

- ``gpu_summary``: per GPU over the window, the row count and first time, each counter's increase,
  the flags and throttle bits seen (presence, counters, thermal), rolled up from per-hour parts;
- ``gpu_buckets``: per GPU and ``GPU_BUCKET_S`` window, the busy SM clock and power, the PCIe
  replay increase and slow-bit scrapes, and the node's medians (the peer rules). Not one scan
  with the summary: the summary's dozen aggregates on each of ~12 M bucket groups (a day of
  2,048 nodes) made the scan's hash table and frame twice as big (10.7 GB peak).
- ``port_buckets``: per port and ``PORT_BUCKET_S`` window, the data counters' increases (the
  rate rules) and each error counter's minimum and maximum; ``port_summary`` is rolled up from it.

Their SQL is the store's (``ingest/store/rollups.py``): writers keep each closed hour of them
(the rollups), and ``_chunked`` reads an hour from there while it is exact, computing the rest.

The rules that look closer (a rise within minutes, a ratio per scrape) fetch the series of the
few GPUs or ports these aggregates pick, in a filtered scan of their own (``keyed_series``).
"""

from __future__ import annotations

import queue
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Final

import duckdb
import polars as pl

from fleetlog.analysis.context import US, AnalysisContext, Finding, query_pl
from fleetlog.ingest.store import reader_cursor, rollups
from fleetlog.ingest.store.rollups import (
    BUSY_UTIL,
    CHUNK_S,
    GPU_BUCKET_S,
    GPU_COUNTERS,
    PORT_BUCKET_S,
    PORT_COUNTERS,
    SLOW_BITS,
    THERMAL_BITS,
    Rollup,
    busy_sql,
)

__all__ = ["BUSY_UTIL", "CHUNK_S", "GPU_BUCKET_S", "PORT_BUCKET_S", "SLOW_BITS", "THERMAL_BITS",
           "busy_expr", "busy_sql", "cite", "cited_ids", "flagged_windows", "gpu_buckets",
           "gpu_summary", "job_of_node", "keyed_series", "port_buckets", "port_summary",
           "row_ref"]

MAX_CHUNKS: Final = 64
CHUNK_READERS: Final = 2  # chunks read at once (the machine's two cores)
_KEY: Final = "_fleetlog_key"  # keyed_series' sort key (the index of the key row)
_REF: Final = "\x1f"  # joins a row_ref's parts (no key value holds it)


def busy_expr(util: str = "util", throttle: str = "throttle") -> pl.Expr:
    """``busy_sql`` over a frame's ``util`` and integer ``throttle`` columns."""
    return (pl.col(util) >= BUSY_UTIL) & ((pl.col(throttle) & THERMAL_BITS) == 0)


def _chunked(ctx: AnalysisContext, rollup: Rollup) -> pl.DataFrame:
    """``rollup``'s grouped SELECT over the read window: the hours the store keeps exactly
    (``rollups.valid_chunks``: stored at landing, from as many rows as the store holds now) read
    from their rollup, the rest computed from the samples a time chunk at a time, all stacked in
    time order. The same rows as one query over the whole window, since every group is a window
    of a bucket width that divides ``CHUNK_S`` (or, for ``gpu_hours``, is rolled up again by the
    caller), so no group straddles two chunks.

    Why chunks: grouped by GPU and 2-minute window, a day is ~12 M groups, and a hash table that
    size misses the cache on every row; an hour's ~0.5 M groups do not, and the ts predicate of
    each chunk lets the zone maps skip the rest of the day (2x faster on the 2,048-node day).
    Two chunks run at once, each on its own connection to the store (``reader_cursor``): a
    chunk's last steps (merging, handing the rows to Arrow and polars) keep one core busy, and
    the other chunk fills the other (15-20 % less time). Why rollups: the grouping is most of an
    analysis' time (17 of 30 s on a 2,048-node day); a stored hour is read in a fraction of it."""
    if ctx.read_from_us >= ctx.until_us:
        return query_pl(ctx.con, rollup.sql.format(where="false"))
    hour = CHUNK_S * US
    first_full = -(-ctx.read_from_us // hour) * hour
    full = list(range(first_full, ctx.until_us - hour + 1, hour))
    stored = set(rollups.valid_chunks(ctx.con, rollup, full, _source_counts(ctx, rollup, full)))
    # Long windows (weeks of history) take longer chunks rather than thousands of queries.
    step = hour * max(1, -(-(ctx.until_us - ctx.read_from_us) // (hour * MAX_CHUNKS)))
    tasks: list[str] = []
    start = ctx.read_from_us
    while start < ctx.until_us:
        if start in stored:  # a run of stored hours: one read
            end = start
            while end in stored:
                end += hour
            tasks.append(rollups.stored_sql(ctx.con, rollup, start, end))
        else:  # up to the next stored hour or step boundary, computed from the samples
            end = min((start // step + 1) * step, ctx.until_us,
                      min((h for h in stored if h > start), default=ctx.until_us))
            tasks.append(rollup.sql.format(where=rollups.chunk_where(start, end)))
        start = end
    return _read_all(ctx, tasks)


def _source_counts(ctx: AnalysisContext, rollup: Rollup,
                   chunks: list[int]) -> list[dict[int, int]]:
    """Rows per hour over ``chunks`` of ``rollup``'s source in each store file: one count,
    shared by the rollups of one source."""
    if not chunks:
        return []
    return ctx.shared(f"rollup_counts:{rollup.source}", lambda: rollups.shard_counts(
        ctx.con, rollup.source, chunks[0], chunks[-1] + CHUNK_S * US))


def _read_all(ctx: AnalysisContext, queries: list[str]) -> pl.DataFrame:
    """The frames of ``queries``, stacked in their order, two read at once where the store
    allows a second connection."""
    made = [reader_cursor(ctx.con) for _ in range(CHUNK_READERS if len(queries) > 1 else 0)]
    readers = [reader for reader in made if reader is not None]
    if len(readers) < CHUNK_READERS:  # one query, or a store no second connection can read
        for reader in readers:
            reader.close()
        return pl.concat([query_pl(ctx.con, sql) for sql in queries], how="vertical")
    free: queue.SimpleQueue[duckdb.DuckDBPyConnection] = queue.SimpleQueue()
    for reader in readers:
        free.put(reader)

    def read(sql: str) -> pl.DataFrame:
        reader = free.get()
        try:
            return query_pl(reader, sql)
        finally:
            free.put(reader)

    try:
        with ThreadPoolExecutor(len(readers)) as pool:
            parts = list(pool.map(read, queries))  # in order: the same frame every time
    finally:
        for reader in readers:
            reader.close()
    return pl.concat(parts, how="vertical")


def _increase(name: str) -> pl.Expr:
    """A counter's maximum minus its minimum over the buckets rolled up, as DuckDB's max and
    min over the rows would give it (there a NaN is the largest value: max propagates it)."""
    return (pl.col(f"{name}_hi").nan_max() - pl.col(f"{name}_lo").min()).alias(name)


def gpu_buckets(ctx: AnalysisContext) -> pl.DataFrame:
    """Per (node, gpu, b): ``b`` the window's start (µs); ``clk``/``pw`` the mean busy SM clock
    and power (utilization at least ``BUSY_UTIL``, no thermal bit; null when never busy), ``rp``
    the PCIe replay increase, ``slow_bits`` the scrapes with HW slowdown or power brake; the
    node's median ``clk`` and ``pw`` over its GPUs in that window (``node_clk``, ``node_pw``),
    how many of them were busy (``busy``), and ``lead`` true on one row of each node and
    window (for the node rules)."""
    return ctx.shared("gpu_buckets", lambda: _chunked(ctx, rollups.ROLLUPS["gpu_buckets"]))


def gpu_summary(ctx: AnalysisContext) -> pl.DataFrame:
    """Per GPU over the window: row count, first sample, counter increases (``sbe``, ``dbe``,
    ``sram``, ``nvl``), row-remap flags, every throttle bit seen, hottest temperature (only
    what a detector reads: each aggregate over a day's 141 M rows costs ~0.2 s)."""
    return ctx.shared("gpu_summary", lambda: _chunked(ctx, rollups.ROLLUPS["gpu_hours"])
                      .group_by("node", "gpu").agg(
        pl.col("n").sum(), pl.col("first_us").min(),
        *[_increase(name) for name in GPU_COUNTERS],
        pl.col("rrp").nan_max(), pl.col("rrf").nan_max(), pl.col("throttle").bitwise_or(),
        pl.col("tmax").nan_max(),
    ).sort("node", "gpu"))


def port_buckets(ctx: AnalysisContext) -> pl.DataFrame:
    """Per (switch, port, b): ``x``/``r`` the transmit/receive data increase within the window,
    each error counter's minimum and maximum and the lowest link state (for ``port_summary``)."""
    return ctx.shared("port_buckets", lambda: _chunked(ctx, rollups.ROLLUPS["port_buckets"]))


def port_summary(ctx: AnalysisContext) -> pl.DataFrame:
    """Per port over the window: error counter increases (``sym``, ``rcv``, ``downed``,
    ``ler``) and the lowest link state, rolled up from ``port_buckets``."""
    return ctx.shared("port_summary", lambda: port_buckets(ctx).group_by("switch", "port").agg(
        *[_increase(name) for name in PORT_COUNTERS],
        pl.col("min_state").min(),
    ).sort("switch", "port"))


def job_of_node(ctx: AnalysisContext) -> pl.DataFrame:
    """(node, job, start_us, end_us): who held each node when (an open placement ends far
    ahead), from the folded job placements."""
    def build() -> pl.DataFrame:
        rows = [(node, p.job, p.start_us, p.end_us if p.end_us is not None else 2**62)
                for p in ctx.projections.jobs.placements for node in p.nodes]
        return pl.DataFrame(rows, schema={"node": pl.String, "job": pl.String,
                                          "start_us": pl.Int64, "end_us": pl.Int64},
                            orient="row")
    return ctx.shared("job_of_node", build)


def flagged_windows(ctx: AnalysisContext, flags: pl.DataFrame, keys: Sequence[str],
                    bucket_s: int, before_us: int, after_us: int) -> pl.DataFrame:
    """(keys..., ``lo``, ``hi``): the stretches of time a second pass reads for each key — from
    ``before_us`` before the start of each bucket in ``flags`` (rows of ``keys`` and ``b``) to
    ``after_us`` after its end, clamped to the read window, overlapping stretches of one key
    merged. Why: the rules that look closer need a key's series only around what its buckets
    flagged (plus their own look-back), not the whole window: a hung job's 160 nodes flagged
    for ten minutes of a day were 11 M rows read whole, ~1 M read this way."""
    step = bucket_s * US
    frame = (flags.select(*keys, "b").unique().sort(*keys, "b")
             .with_columns((pl.col("b") - before_us).clip(lower_bound=ctx.read_from_us)
                           .alias("lo"),
                           (pl.col("b") + step + after_us).clip(upper_bound=ctx.until_us)
                           .alias("hi"))
             .filter(pl.col("lo") < pl.col("hi")))  # a bucket outside the read window
    if frame.is_empty():
        return frame.select(*keys, "lo", "hi")
    return (frame.with_columns(_merged_runs(over=keys).alias("_stretch"))
            .group_by(*keys, "_stretch").agg(pl.col("lo").min(), pl.col("hi").max())
            .drop("_stretch").sort(*keys, "lo"))


def keyed_series(ctx: AnalysisContext, table: str, keys: pl.DataFrame, columns: str,
                 then_by: Sequence[str] = ()) -> pl.DataFrame:
    """``columns`` (SQL over ``table`` as ``s``; among them ``t``, the time in µs) of the rows
    in the read window whose key columns (the columns of ``keys``) match a row of ``keys``,
    ordered by those keys, then ``then_by``, then ``t``: what ``ORDER BY`` in the query would
    give, but sorted by polars on an integer key. DuckDB sorting the ~15 M rows of the 1,755
    candidate ports of a 2,048-node day took 3x their scan (and 4x under the memory cap, where
    the sort spills); polars sorts them outside the cap, by integers, not strings.

    When ``keys`` has ``lo`` and ``hi`` columns (µs; ``flagged_windows``), only the rows of
    each key within ``[lo, hi)`` are read, and the frame gets a column ``w`` (the stretch's
    ``lo``): one series per key and stretch, ordered by keys, ``w``, ``then_by``, ``t``. The
    stretches are read a span of time at a time (``_spans``), so the zone maps skip the hours
    no stretch covers."""
    names = [name for name in keys.columns if name not in ("lo", "hi")]
    if "lo" not in keys.columns:
        indexed = keys.unique().sort(names).with_row_index(_KEY)
        frame = _join_read(ctx, table, indexed, names, columns, ctx.ts_filter("s.ts"), False)
        return frame.sort(_KEY, *then_by, "t").drop(_KEY)
    indexed = keys.unique().sort(*names, "lo").with_row_index(_KEY).with_columns(
        pl.col("lo").cast(pl.Datetime("us", "UTC")).alias("lo_ts"),
        pl.col("hi").cast(pl.Datetime("us", "UTC")).alias("hi_ts"))
    parts = [_join_read(ctx, table, part, names, columns,
                        f"s.ts >= make_timestamptz({lo}) AND s.ts < make_timestamptz({hi})", True)
             for lo, hi, part in _spans(indexed)]
    if not parts:
        parts = [_join_read(ctx, table, indexed, names, columns, "false", True)]
    return pl.concat(parts, how="vertical").sort(_KEY, *then_by, "t").drop(_KEY)


SPAN_GAP_US: Final = 600 * US  # stretches closer than this in time are read in one query


def _merged_runs(gap_us: int = 0, over: Sequence[str] = ()) -> pl.Expr:
    """Numbers the runs of ``[lo, hi)`` intervals (rows sorted by ``lo``, within each group of
    ``over``) that overlap or lie within ``gap_us`` of each other: a run opens where an
    interval starts past every earlier one's end."""
    ends = pl.col("hi").cum_max().shift(1)
    ends = ends.over(over) if over else ends
    runs = (ends.is_null() | (pl.col("lo") > ends + gap_us)).cum_sum()
    return runs.over(over) if over else runs


def _spans(indexed: pl.DataFrame) -> list[tuple[int, int, pl.DataFrame]]:
    """The stretches grouped into spans of time that overlap (or nearly): (start, end, the
    stretches)."""
    ordered = indexed.sort("lo")
    spans: list[tuple[int, int, pl.DataFrame]] = []
    if ordered.is_empty():
        return spans
    ordered = ordered.with_columns(_merged_runs(gap_us=SPAN_GAP_US).alias("_span"))
    for (_span,), part in ordered.group_by(["_span"], maintain_order=True):
        lo, hi = part["lo"].min(), part["hi"].max()
        spans.append((int(lo), int(hi), part.drop("_span")))  # type: ignore[arg-type]
    return spans


def _join_read(ctx: AnalysisContext, table: str, indexed: pl.DataFrame, names: Sequence[str],
               columns: str, where: str, windowed: bool) -> pl.DataFrame:
    """One read of ``table`` joined to the key rows ``indexed`` (with ``_KEY``)."""
    ctx.con.register("_fleetlog_series_keys", indexed.to_arrow())
    try:
        on = " AND ".join(f"s.{name} = k.{name}" for name in names)
        extra = ""
        if windowed:
            on += " AND s.ts >= k.lo_ts AND s.ts < k.hi_ts"
            extra = ", k.lo AS w"
        return query_pl(ctx.con,
            f"SELECT k.{_KEY}{extra}, {columns} FROM {table} s "
            f"JOIN _fleetlog_series_keys k ON {on} WHERE {ctx.ts_filter('s.ts')} AND {where}")
    finally:
        ctx.con.unregister("_fleetlog_series_keys")


def row_ref(*key: object) -> str:
    """A stand-in for the event id of one row of a second pass (its key values and ``t``),
    resolved by ``cited_ids``: the series carry no id strings (one per row of millions), only
    the few rows findings cite get theirs."""
    return _REF.join(str(part) for part in key)


def cited_ids(ctx: AnalysisContext, table: str, keys: Sequence[str],
              refs: set[str]) -> dict[str, str]:
    """The event ids of the rows ``refs`` (``row_ref(*key values, t)``) of ``table``: one small
    read, the time list letting the zone maps skip nearly every row group (~20 ms). Where two
    rows share a key and a time, the smallest id."""
    if not refs:
        return {}
    rows = [ref.split(_REF) for ref in sorted(refs)]
    frame = pl.DataFrame({**{name: [row[i] for row in rows] for i, name in enumerate(keys)},
                          "t": [int(row[-1]) for row in rows]})
    times = ", ".join(f"make_timestamptz({t})" for t in sorted(set(frame["t"].to_list())))
    ctx.con.register("_fleetlog_cited", frame.to_arrow())
    try:
        on = " AND ".join(f"CAST(s.{name} AS VARCHAR) = k.{name}" for name in keys)
        found = query_pl(ctx.con,
            f"SELECT {', '.join(f'k.{name}' for name in keys)}, k.t, min(s.event_id) AS id "
            f"FROM {table} s JOIN _fleetlog_cited k ON {on} AND epoch_us(s.ts) = k.t "
            f"WHERE s.ts IN ({times}) GROUP BY ALL")
    finally:
        ctx.con.unregister("_fleetlog_cited")
    return {row_ref(*row[:-1]): str(row[-1]) for row in found.rows()}


def cite(ctx: AnalysisContext, table: str, keys: Sequence[str],
         findings: list[Finding]) -> list[Finding]:
    """``findings`` with the event ids of the rows they cite in their evidence and their
    ``samples`` (``row_ref`` until now; real ids are kept as they are), from one read
    (``cited_ids``); a reference no row answers is dropped."""
    refs = {ref for f in findings
            for ref in (*f.evidence, *f.attrs.get("samples", ())) if _REF in ref}
    ids = cited_ids(ctx, table, keys, refs)

    def resolved(refs: Sequence[str]) -> tuple[str, ...]:
        return tuple(ids.get(ref, ref) for ref in refs if ref in ids or _REF not in ref)

    return [replace(f, evidence=resolved(f.evidence),
                    attrs={**f.attrs, "samples": resolved(f.attrs["samples"])}
                    if "samples" in f.attrs else f.attrs) for f in findings]
