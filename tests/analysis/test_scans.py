"""The shared grouped scans (analysis/detectors/scans.py) give exactly what one query over the
whole window gives: the hour-at-a-time bucketed scans, and the per-port summary rolled up from
the port buckets (NULLs and NaNs included, as DuckDB's own max and min treat them)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl
import pytest

from fleetlog.analysis.context import US, AnalysisContext, build_context, query_pl
from fleetlog.analysis.detectors import scans
from fleetlog.ingest.store import open_store, open_union, reader_cursor, rollups
from fleetlog.ingest.store.writer import land
from tests.analysis.fleet_builders import Cluster

SCRAPES = 800  # 2 h 13 min at 10 s: three hourly chunks, the first and last partial


def _varied_cluster() -> Cluster:
    """Busy and idle scrapes, thermal and slow throttle bits, rising counters, a GPU missing a
    value now and then, a port whose errors rise."""
    cluster = Cluster(nodes=4, racks_of=2, scrapes=SCRAPES, gpus=4)

    def gpu(s: int, node: str, g: int, values: dict[str, float]) -> bool:
        values["util_pct"] = 40.0 if (s // 30 + g) % 5 == 0 else 97.0
        values["sm_clock_mhz"] = 1980.0 - 7 * ((s * 31 + g * 7) % 13)
        values["power_w"] = 600.0 + (s * 17 + g * 5) % 90
        values["throttle_reasons"] = [0.0, 0x20, 0x8, 0x80][(s // 50 + g) % 4] if s % 7 == 0 \
            else 0.0
        values["ecc_sbe_vol_total"] = float(s // 90) if node == "n00002" and g == 1 else 0.0
        values["nvlink_crc_flit_errors"] = float("nan") if s % 97 == 3 else float(s // 200)
        return not (node == "n00003" and g == 2 and 300 <= s < 340)  # absent a while

    def port(s: int, switch: str, p: int, values: dict[str, float]) -> None:
        if switch == "leaf-su01-1" and p == 2:
            values["symbol_error"] = float(s // 40)
            values["link_state"] = 1.0 if 500 <= s < 503 else 4.0
        if s % 113 == 5:
            values["rcv_errors"] = float("nan")

    cluster.hooks.append(gpu)
    cluster.port_hooks.append(port)
    return cluster


@pytest.fixture(scope="module", params=["rollups", "samples"])
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The store read through its hourly rollups (made at landing) where they are exact, or
    without any (every hour computed from the samples): the scans must give the same either way."""
    path = tmp_path_factory.mktemp("scans") / "scans.duckdb"
    land(path, _varied_cluster().build())
    con = open_store(path)
    try:
        # A NaN stored as such (not NULL): DuckDB's max takes it as the largest value. Samples
        # are never updated in fleetlog (the rollups count on it), so they are made again here.
        con.execute("UPDATE port_samples_raw SET link_error_recovery = 'nan'::DOUBLE "
                    "WHERE switch = 'leaf-su01-2' AND port = 3 AND ts = (SELECT min(ts) + "
                    "INTERVAL 1 HOUR FROM port_samples_raw)")
        con.execute("DELETE FROM rollup_chunks")
        if request.param == "rollups":
            assert rollups.rebuild(con)["hours"] == 3
    finally:
        con.close()
    return path


def _uses_rollups(ctx: AnalysisContext) -> bool:
    hours = range(ctx.read_from_us // 3600 // US * 3600 * US, ctx.until_us, 3600 * US)
    return bool(rollups.valid_chunks(ctx.con, rollups.ROLLUPS["gpu_buckets"], hours))


def _open(path: Path) -> duckdb.DuckDBPyConnection:
    return open_store(path, read_only=True)


def _keys(frame: pl.DataFrame, *names: str) -> pl.DataFrame:
    return frame.sort(*names)


def _one_query(ctx: AnalysisContext, sql: str) -> pl.DataFrame:
    return query_pl(ctx.con, sql.format(where=ctx.ts_filter()))


def test_hourly_bucket_scans_equal_one_query_over_the_window(store: Path) -> None:
    con = _open(store)
    try:
        ctx = build_context(con)
        assert ctx is not None
        gpu = scans.gpu_buckets(ctx)
        assert gpu.height > 0 and gpu["slow_bits"].sum() > 0 and gpu["clk"].null_count() > 0
        whole = _one_query(ctx, rollups.GPU_BUCKETS_SQL)
        assert _keys(gpu, "node", "gpu", "b").equals(_keys(whole, "node", "gpu", "b"))
        ports = scans.port_buckets(ctx)
        assert _keys(ports, "switch", "port", "b").equals(
            _keys(_one_query(ctx, rollups.PORT_BUCKETS_SQL), "switch", "port", "b"))
    finally:
        con.close()


def test_a_long_window_takes_longer_chunks_and_the_same_rows(store: Path) -> None:
    con = _open(store)
    try:
        # 90 days of lookback: more hours than MAX_CHUNKS, so each chunk spans several hours.
        ctx = build_context(con, lookback_s=90 * 86400)
        assert ctx is not None
        assert (ctx.until_us - ctx.read_from_us) > scans.MAX_CHUNKS * scans.CHUNK_S * US
        assert _keys(scans.gpu_buckets(ctx), "node", "gpu", "b").equals(
            _keys(_one_query(ctx, rollups.GPU_BUCKETS_SQL), "node", "gpu", "b"))
    finally:
        con.close()


def test_port_summary_rolled_up_from_buckets_equals_a_scan_per_port(store: Path) -> None:
    con = _open(store)
    try:
        ctx = build_context(con)
        assert ctx is not None
        rolled = scans.port_summary(ctx)
        direct = query_pl(con,
            "SELECT switch, port, "
            "max(symbol_error) - min(symbol_error) AS sym, "
            "max(rcv_errors) - min(rcv_errors) AS rcv, "
            "max(link_downed) - min(link_downed) AS downed, "
            "max(link_error_recovery) - min(link_error_recovery) AS ler, "
            "min(link_state) AS min_state "
            f"FROM port_samples WHERE {ctx.ts_filter()} GROUP BY switch, port")
        assert rolled.columns == direct.columns
        assert _keys(rolled, "switch", "port").equals(_keys(direct, "switch", "port"))
        rising = rolled.filter((pl.col("switch") == "leaf-su01-1") & (pl.col("port") == 2))
        assert rising["sym"].item() == (SCRAPES - 1) // 40 and rising["min_state"].item() == 1
        nan_port = rolled.filter((pl.col("switch") == "leaf-su01-2") & (pl.col("port") == 3))
        assert nan_port["ler"].is_nan().item()
    finally:
        con.close()


def test_gpu_summary_rolled_up_from_hours_equals_a_scan_per_gpu(
        store: Path, request: pytest.FixtureRequest) -> None:
    con = _open(store)
    try:
        ctx = build_context(con)
        assert ctx is not None
        assert _uses_rollups(ctx) == (request.node.callspec.params["store"] == "rollups")
        counters = "".join(f"max({col}) - min({col}) AS {name}, "
                           for name, col in rollups.GPU_COUNTERS.items())
        direct = query_pl(con,
            f"SELECT node, gpu, count(*) AS n, epoch_us(min(ts)) AS first_us, {counters}"
            "max(row_remap_pending) AS rrp, max(row_remap_failure) AS rrf, "
            "bit_or(CAST(coalesce(throttle_reasons, 0) AS UBIGINT)) AS throttle, "
            f"max(gpu_temp_c) AS tmax FROM gpu_samples WHERE {ctx.ts_filter()} GROUP BY ALL")
        summary = scans.gpu_summary(ctx)
        assert summary.schema == direct.schema
        assert summary.equals(_keys(direct, "node", "gpu"))
        assert summary["throttle"].max() > 0 and summary["n"].sum() == query_pl(
            con, f"SELECT count(*) AS n FROM gpu_samples WHERE {ctx.ts_filter()}")["n"].item()
    finally:
        con.close()


def test_bucket_widths_divide_the_chunk() -> None:
    assert scans.CHUNK_S % scans.GPU_BUCKET_S == 0
    assert scans.CHUNK_S % scans.PORT_BUCKET_S == 0


def test_keyed_series_is_the_ordered_query(store: Path) -> None:
    con = _open(store)
    try:
        ctx = build_context(con)
        assert ctx is not None
        keys = pl.DataFrame({"switch": ["leaf-su01-2", "leaf-su01-1", "leaf-su01-1"],
                             "port": [3, 2, 4]}, schema={"switch": pl.String, "port": pl.UInt16})
        columns = "s.switch, s.port, epoch_us(s.ts) AS t, s.symbol_error, s.event_id"
        got = scans.keyed_series(ctx, "port_samples", keys, columns)
        con.register("_want_keys", keys.to_arrow())
        want = query_pl(con,
            f"SELECT {columns} FROM port_samples s SEMI JOIN _want_keys k "
            f"ON s.switch = k.switch AND s.port = k.port WHERE {ctx.ts_filter('s.ts')} "
            "ORDER BY s.switch, s.port, s.ts")
        assert got.height == 3 * SCRAPES and got.equals(want)
        nodes = scans.keyed_series(ctx, "gpu_samples", pl.DataFrame({"node": ["n00003"]}),
                                   "s.node, s.gpu, epoch_us(s.ts) AS t", then_by=["gpu"])
        assert nodes.equals(query_pl(con,
            "SELECT s.node, s.gpu, epoch_us(s.ts) AS t FROM gpu_samples s "
            f"WHERE s.node = 'n00003' AND {ctx.ts_filter('s.ts')} ORDER BY s.gpu, s.ts"))
    finally:
        con.close()


def test_chunks_read_in_parallel_through_a_union_give_the_same_frame(
        store: Path, tmp_path: Path) -> None:
    # The analysis reads through open_union (TEMP views, which a second connection does not
    # see: reader_cursor makes them again); a union of two shards keeps TEMP tables too, so it
    # reads its chunks one at a time. Every way gives the frame one connection gives.
    con = _open(store)
    try:
        ctx = build_context(con)
        assert ctx is not None
        want = _keys(scans.gpu_buckets(ctx), "node", "gpu", "b")
    finally:
        con.close()
    union = open_union([store], memory_limit="1GB")
    try:
        reader = reader_cursor(union)
        assert reader is not None
        assert reader.execute("SELECT count(*) FROM gpu_samples").fetchall() == \
            union.execute("SELECT count(*) FROM gpu_samples").fetchall()
        reader.close()
        ctx = build_context(union)
        assert ctx is not None
        assert _keys(scans.gpu_buckets(ctx), "node", "gpu", "b").equals(want)
    finally:
        union.close()
    events = _varied_cluster().build()
    halves = [tmp_path / "a.duckdb", tmp_path / "b.duckdb"]
    land(halves[0], events[::2])
    land(halves[1], events[1::2])
    union = open_union(halves, memory_limit="1GB")
    try:
        assert reader_cursor(union) is None
        ctx = build_context(union)
        assert ctx is not None
        assert _keys(scans.gpu_buckets(ctx), "node", "gpu", "b").equals(want)
    finally:
        union.close()
