"""Peer-relative features per time window, for the learned detector (``detectors.learned``).

A gray failure names no counter: what gives it away is that one part does less than its peers
doing the same work at the same time (ByteDance's Minder, NSDI'25: machine-level similarity
across a job's ranks). So every feature here is a part's value in one window against the same
value of its peers in that window, as a robust z-score ``(x - median_peers) / scale_peers`` with
``scale = max(1.4826 * MAD, floor)``. Whatever moves every peer together (a checkpoint phase, a
job's step rhythm, a rack warming, the diurnal load) cancels; one part that departs stands out.

Three tables, one row per part and window (``WINDOW_S``):

- GPU against the other GPUs of its node: SM clock and power while busy (util >= ``BUSY_UTIL``:
  an idle or checkpointing GPU says nothing about its speed), the share of samples with a
  slowdown throttle bit (HW slowdown 0x8, SW/HW thermal 0x20/0x40, power brake 0x80; not idle
  0x1 or the clock-setting 0x4 that healthy GPUs show), and PCIe replays and NVLink CRC errors as
  rates over the window (short) and as the number of windows with any in the last
  ``LONG_WINDOWS`` (long: a trickle that persists, where an isolated blip counts once).
- node against the other nodes of its job (its placement at that time; the nodes of jobs
  smaller than ``MIN_PEERS`` nodes against each other, on clock and throttle only: power depends
  on the workload): the node's median of its GPUs' clock, power and throttle share; a node held
  at a power cap is slow on every GPU, so it is only an outlier against other nodes.
- port against the other ports of its node (rail i of the node on leaf i): transmit and receive
  data rates; a port at half its bandwidth with every error counter at zero.

Features are one-sided (how much *lower* the clock, power or data rate, how much *higher* the
error rate or throttle share): a part that is faster than its peers is not failing. A window
whose peers number fewer than ``MIN_PEERS`` gives no row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
import polars as pl

from fleetlog.analysis.context import US, AnalysisContext, query_pl
from fleetlog.analysis.detectors.scans import BUSY_UTIL, job_of_node
from fleetlog.ingest import contract as c

WINDOW_S: Final = 120  # two minutes: a dozen 10-s scrapes, short enough to see a ramp's onset
LONG_WINDOWS: Final = 15  # the long rate: windows with errors in the last 30 minutes
SLOWDOWN_BITS: Final = 0x8 | 0x20 | 0x40 | 0x80
MIN_PEERS: Final = 4  # a window's peer group (self included) must be at least this large
SMALL_GROUP: Final = 16  # peer groups up to this size are reduced as a numpy array
SMALL_JOBS: Final = "(small jobs)"  # the peer group of the nodes of jobs smaller than MIN_PEERS

# Scale floors: the spread below which peers are "the same" (measurement noise), so that eight
# identical values do not make a 0.1 % difference a thousand sigmas. Relative floors for levels
# (a fraction of the peers' median), absolute for counts (one event per window; one window).
RELATIVE_FLOOR: Final = 0.03
COUNT_FLOOR: Final = 1.0

GPU_FEATURES: Final = ("clock_low", "power_low", "throttle_high", "pcie_high", "pcie_long",
                       "nvlink_high", "nvlink_long")
NODE_FEATURES: Final = ("node_clock_low", "node_power_low", "node_throttle_high")
PORT_FEATURES: Final = ("xmit_low", "rcv_low")


def _nanmedian_members(cube: np.ndarray) -> np.ndarray:
    """Median over axis 1 ignoring NaN (NaN where a group has no value): a sort, which puts NaN
    last, then the middle of the valid ones (``np.nanmedian`` is several times slower)."""
    ordered = np.sort(cube, axis=1)
    valid = (~np.isnan(cube)).sum(axis=1)
    lo = np.take_along_axis(ordered, np.maximum((valid - 1) // 2, 0)[:, None, :], axis=1)[:, 0]
    hi = np.take_along_axis(ordered, np.maximum(valid // 2, 0)[:, None, :], axis=1)[:, 0]
    out: np.ndarray = np.where(valid > 0, (lo + hi) / 2, np.nan)
    return out


def _peer_stats(frame: pl.DataFrame, group: list[str], values: list[str]) -> pl.DataFrame:
    """``frame`` (its rows of one group together, as the scans' ORDER BY gives them) with
    ``_peers``, ``_med_<v>``, ``_mad_<v>`` per row.

    Groups of at most ``SMALL_GROUP`` rows (a node's GPUs, a node's ports) are laid out as a
    (groups x members x values) array and reduced with numpy: no hash grouping or joins, which
    cost most of the learned detector's time on a large fleet. Larger groups (a job's nodes) go
    through polars' grouped medians."""
    starts = pl.any_horizontal([pl.col(k).ne_missing(pl.col(k).shift(1)) for k in group])
    gid = frame.select(starts.cum_sum().cast(pl.Int64) - 1).to_series().to_numpy()
    sizes = np.bincount(gid)
    if sizes.size == 0 or sizes.max() > SMALL_GROUP:
        medians = frame.group_by(group).agg(
            pl.len().alias("_peers"), *[pl.col(v).median().alias(f"_med_{v}") for v in values])
        joined = frame.join(medians, on=group, maintain_order="left")
        mads = joined.group_by(group).agg(
            *[(pl.col(v) - pl.col(f"_med_{v}")).abs().median().alias(f"_mad_{v}")
              for v in values])
        return joined.join(mads, on=group, maintain_order="left")
    first = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    member = np.arange(len(gid)) - first[gid]
    x = frame.select(values).to_numpy().astype(np.float64)
    cube = np.full((sizes.size, int(sizes.max()), len(values)), np.nan)
    cube[gid, member] = x
    med = _nanmedian_members(cube)
    mad = _nanmedian_members(np.abs(cube - med[:, None, :]))
    return frame.with_columns(
        pl.Series("_peers", sizes[gid]),
        *[pl.Series(f"_med_{v}", med[gid, i]) for i, v in enumerate(values)],
        *[pl.Series(f"_mad_{v}", mad[gid, i]) for i, v in enumerate(values)],
    )


def peer_z(frame: pl.DataFrame, group: list[str],
           specs: Sequence[tuple[str, str, bool, bool]]) -> pl.DataFrame:
    """``frame`` with one-sided robust z-scores against the peers in ``group`` (same window).

    ``specs``: (value column, feature name, relative floor?, lower is worse?). Rows whose group
    has fewer than ``MIN_PEERS`` members are dropped."""
    values = sorted({v for v, _n, _r, _l in specs})
    joined = _peer_stats(frame, group, values).filter(pl.col("_peers") >= MIN_PEERS)
    out = []
    for value, name, relative, lower in specs:
        x, med = pl.col(value), pl.col(f"_med_{value}")
        floor = (med.abs() * RELATIVE_FLOOR) if relative else pl.lit(COUNT_FLOOR)
        scale = pl.max_horizontal(pl.col(f"_mad_{value}") * 1.4826, floor, pl.lit(1e-9))
        z = ((med - x) if lower else (x - med)) / scale
        out.append(z.clip(lower_bound=0.0).fill_null(0.0).fill_nan(0.0).alias(name))
    return joined.with_columns(out)


def gpu_windows(ctx: AnalysisContext) -> pl.DataFrame:
    """Per GPU and window: busy clock and power, slowdown share, counter increases (one scan)."""
    w = WINDOW_S * US
    return ctx.shared("gpu_windows", lambda: query_pl(ctx.con,
        f"SELECT node, gpu, epoch_us(ts) // {w} AS bucket, max(epoch_us(ts)) AS last_us, "
        f"avg(sm_clock_mhz) FILTER (util_pct >= {BUSY_UTIL}) AS clock, "
        f"avg(power_w) FILTER (util_pct >= {BUSY_UTIL}) AS power, "
        f"avg(CASE WHEN (CAST(coalesce(throttle_reasons, 0) AS UBIGINT) & {SLOWDOWN_BITS}) <> 0 "
        "THEN 1.0 ELSE 0.0 END) AS throttle, "
        "coalesce(max(pcie_replays) - min(pcie_replays), 0) AS pcie, "
        "coalesce(max(nvlink_crc_flit_errors) - min(nvlink_crc_flit_errors), 0) AS nvlink "
        f"FROM gpu_samples WHERE {ctx.ts_filter()} GROUP BY ALL ORDER BY node, bucket, gpu"
    ))


def _long(column: str, keys: list[str]) -> pl.Expr:
    """Windows with any increase among the last ``LONG_WINDOWS`` of the same part."""
    return (pl.col(column) > 0).cast(pl.Float64).rolling_sum(
        LONG_WINDOWS, min_samples=1).over(keys)


def gpu_features(ctx: AnalysisContext) -> pl.DataFrame:
    """GPU rows: node, gpu, bucket, last_us and ``GPU_FEATURES`` (against the node's GPUs)."""
    raw = gpu_windows(ctx).with_columns(
        _long("pcie", ["node", "gpu"]).alias("pcie_n"),
        _long("nvlink", ["node", "gpu"]).alias("nvlink_n"),
    )
    return peer_z(raw, ["node", "bucket"], [
        ("clock", "clock_low", True, True), ("power", "power_low", True, True),
        ("throttle", "throttle_high", False, False), ("pcie", "pcie_high", False, False),
        ("pcie_n", "pcie_long", False, False), ("nvlink", "nvlink_high", False, False),
        ("nvlink_n", "nvlink_long", False, False),
    ]).select("node", "gpu", "bucket", "last_us", *GPU_FEATURES)



def node_features(ctx: AnalysisContext) -> pl.DataFrame:
    """Node rows: node, job, bucket, last_us and ``NODE_FEATURES`` (against the job's nodes)."""
    per_node = gpu_windows(ctx).group_by("node", "bucket").agg(
        pl.col("last_us").max(), pl.col("clock").median(), pl.col("power").median(),
        pl.col("throttle").median(),
    )
    placed = per_node.join(job_of_node(ctx), on="node").filter(
        (pl.col("last_us") >= pl.col("start_us")) & (pl.col("last_us") < pl.col("end_us"))
    ).sort("start_us").unique(subset=["node", "bucket"], keep="last")
    # A job too small to be its own peer group (one node, say) is compared with the other
    # small jobs' nodes of the window: a capped node has no job peers to be slower than.
    placed = placed.with_columns(pl.when(pl.len().over("job", "bucket") >= MIN_PEERS)
                                 .then(pl.col("job")).otherwise(pl.lit(SMALL_JOBS))
                                 .alias("peer_group"))
    return peer_z(placed.sort("peer_group", "bucket"), ["peer_group", "bucket"], [
        ("clock", "node_clock_low", True, True), ("power", "node_power_low", True, True),
        ("throttle", "node_throttle_high", False, False),
    ]).with_columns(  # power depends on the workload: comparable within one job only
        pl.when(pl.col("peer_group") == SMALL_JOBS).then(0.0)
        .otherwise(pl.col("node_power_low")).alias("node_power_low"),
    ).select("node", "job", "bucket", "last_us", *NODE_FEATURES)


def port_features(ctx: AnalysisContext) -> pl.DataFrame:
    """Port rows: switch, port, node, nic, bucket, last_us and ``PORT_FEATURES`` (against the
    other ports of the same node). A window whose first scrape or the previous window's found
    the port not Active is no row: a port that is down is the rules' (``link_down``), not a gray
    failure; its peers are still compared with each other."""
    facing = [(sw, port, peer, peer[4:].split("/", 1)[0])
              for (sw, port), peer in ctx.projections.topology.links.items()
              if peer.startswith("nic:")]
    if not facing:
        return pl.DataFrame()
    links = pl.DataFrame(facing, schema={"switch": pl.String, "port": pl.Int64,
                                         "nic": pl.String, "node": pl.String}, orient="row")
    w = WINDOW_S * US
    ctx.con.register("_fleetlog_facing", links.to_arrow())
    try:
        # The data counters are cumulative: a window's rate is the difference between the
        # first scrape of the window and that of the previous one, so only those scrapes are
        # read (one in WINDOW_S / interval) and nothing is grouped by window in the scan.
        edges = query_pl(ctx.con,
            f"SELECT s.switch, s.port, f.node, f.nic, epoch_us(s.ts) AS t, s.xmit_data, "
            f"s.rcv_data, coalesce(s.link_state, {c.PORT_STATE_ACTIVE}) >= "
            f"{c.PORT_STATE_ACTIVE} AS active FROM port_samples s JOIN _fleetlog_facing f "
            f"ON s.switch = f.switch AND s.port = f.port WHERE {ctx.ts_filter('s.ts')} "
            f"AND epoch_us(s.ts) % {w} < {ctx.interval_us} ORDER BY s.switch, s.port, t"
        )
    finally:
        ctx.con.unregister("_fleetlog_facing")
    edges = edges.with_columns((pl.col("t") // w).alias("bucket")).unique(
        subset=["switch", "port", "bucket"], keep="first", maintain_order=True)
    same = (pl.col("switch") == pl.col("switch").shift(1)) & (
        pl.col("port") == pl.col("port").shift(1))
    span = (pl.col("t") - pl.col("t").shift(1)).cast(pl.Float64)
    joined = edges.with_columns(
        ((pl.col("xmit_data") - pl.col("xmit_data").shift(1)) / span).alias("xmit"),
        ((pl.col("rcv_data") - pl.col("rcv_data").shift(1)) / span).alias("rcv"),
        (pl.col("active") & pl.col("active").shift(1)).alias("up"),
        pl.col("t").alias("last_us"),
        same.alias("_same"),
    ).filter(pl.col("_same").fill_null(False) & (pl.col("xmit") >= 0) & (pl.col("rcv") >= 0)
             ).sort("node", "bucket")
    return peer_z(joined, ["node", "bucket"], [
        ("xmit", "xmit_low", True, True), ("rcv", "rcv_low", True, True),
    ]).filter(pl.col("up")).select(
        "switch", "port", "node", "nic", "bucket", "last_us", *PORT_FEATURES,
    )
