"""Peer-relative GPU and node detectors: the fail-slow (gray) parts no error counter names.

A part that runs slow shows only against its peers: the other GPUs of its node (same job, same
phase, same cooling, same collectives), the ranks of its job on other nodes (where its own node
cannot tell: too few busy GPUs, or several of them slow together) and, for a whole node, the
other nodes of its job. Fixed
thresholds misfire (a checkpoint phase drops every GPU's power; different jobs draw different
power), so every rule here is a ratio to the median of the peers at the same moment, a median
that a single abnormal peer cannot move. Signals and why (../shared/DESIGN.md, docs/faults.md):

- a GPU's ``sm_clock_mhz`` at high utilization well below its node's other busy GPUs
  (``gpu_slow``): a clock that falls without a thermal bit (the thermal detector owns those) is a
  GPU running slow, and synchronous data parallel waits for it;
- a GPU's ``power_w`` at high utilization below its peers while the clock stays
  (``gpu_power_low``): its SMs stall (an NVLink or memory path running degraded);
- ``throttle_reasons`` with HW slowdown (0x8) or power brake (0x80) for several scrapes: on most
  GPUs of a node at once it is the node's power delivery (``node_throttled``), on one GPU that
  GPU (``hw_slowdown``);
- ``pcie_replays`` rising in several separate scrapes within a short or a long window, more than
  the fleet's own background makes likely (``pcie_replays``): a PCIe link retraining; one
  isolated jump is a blip, not a trend;
- a node's median clock or power at high utilization below the other nodes of its job
  (``node_slow``): a node held at a power cap (every GPU of it low, so no GPU stands out against
  its own node).

Time to detect: the ratio rules also run a CUSUM of each scrape's ratio in units of the GPU's
own noise (``series.cusum_low``), so a deep step fires in a few scrapes and a shallow one as soon
as its evidence adds up, instead of after a fixed smoothing window.

Scale (a 2,048-node day is ~140 M rows): the shared grouped scan (``scans.gpu_buckets``) buckets
every GPU into ``BUCKET_S`` windows (busy clock and power, replays, slow-bit scrapes); the peer
medians on those buckets pick the few nodes worth a look; the scrape-level rules run on those
nodes' series only.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
import polars as pl

from fleetlog.analysis.context import US, AnalysisContext, Finding, query_pl
from fleetlog.analysis.detectors.scans import (
    BUSY_UTIL,
    GPU_BUCKET_S,
    SLOW_BITS,
    THERMAL_BITS,
    gpu_buckets,
    keyed_series,
)
from fleetlog.analysis.detectors.series import (
    cusum_episodes,
    cusum_low,
    increments,
    rising_episodes,
    runs,
)
from fleetlog.ingest import contract as c

BUCKET_S: Final = GPU_BUCKET_S  # first-pass bucket: fine enough to find a slow node in minutes
MIN_PEERS: Final = 3  # fewer busy peers than this: no median worth comparing with
SERIES_BATCH_NODES: Final = 128  # candidate nodes whose scrape series are read at once
# Ratios to the peers' median. Healthy busy GPUs of one node agree within ~1 % (one standard
# deviation) in clock and ~4-5 % per scrape in power, so power is smoothed over more scrapes
# (the median of POWER_SMOOTH scrapes varies by ~1 %); each threshold sits many of those
# deviations out, and a part slowing a job by 10 % or more is past them.
GPU_CLOCK_RATIO: Final = 0.9
GPU_POWER_RATIO: Final = 0.93
# A step down shows sooner in the CUSUM of the per-scrape ratio (series.cusum_low): allowance
# half of 1 - GPU_*_RATIO (the smallest drop worth finding), in units of the GPU's own noise
# (_noise, at least SIGMA_FLOOR for parts that report steady values). One scrape adds at most
# CUSUM_CLIP noise units, so it takes three scrapes or more; CUSUM_THRESHOLD is Page's h: under
# Gaussian noise, with the allowance >= 0.6 noise units (busy power scatters by ~4-5 % per
# scrape), a false run comes about once in 10^7 busy scrapes of one GPU (Siegmund's
# approximation), some 10,000 node-hours of 8 GPUs. A 10 % step in power then takes ~10 busy
# scrapes, a 20 % one ~5, a clock 10 % down 3.
CUSUM_CLIP: Final = 4.0
CUSUM_THRESHOLD: Final = 12.0
SIGMA_FLOOR: Final = 0.01
CLOCK_SMOOTH: Final = 9  # rolling median of the per-scrape ratio over busy scrapes
POWER_SMOOTH: Final = 30
PERSIST_SCRAPES: Final = 3  # consecutive smoothed busy scrapes below the ratio before it fires
# A GPU's power has a fixed offset from its peers (silicon, cooling position): the ratio is taken
# against its own usual one (the median over its previous BASELINE_SCRAPES busy scrapes, never
# above 1: a GPU that usually draws more is not weak when it draws what its peers draw).
BASELINE_SCRAPES: Final = 360
BASELINE_MIN: Final = 60
# First pass: a GPU whose bucket ratio is below these in two consecutive buckets is a candidate.
CANDIDATE_CLOCK: Final = 0.94
CANDIDATE_POWER: Final = 0.93
NODE_CLOCK_RATIO: Final = 0.93
NODE_POWER_RATIO: Final = 0.85
NODE_BUCKETS: Final = 2  # consecutive buckets a node must be low in
SLOW_BIT_SCRAPES: Final = 3  # scrapes with HW slowdown / power brake in a row
NODE_BIT_SHARE: Final = 0.5  # of a node's GPUs with slow bits at once: the node's power
# PCIe replays, against the fleet's own background: a GPU whose counter rose in n separate
# scrapes within a window, where n is the smallest count (at least MIN_RISES: one jump is a blip,
# however large) that the fleet's background rate makes rarer than REPLAY_FALSE_PER_GPU_HOUR.
# The background is what the analyzed GPUs themselves show (the share of them whose counter rose
# at all, counting the one under test), so a fleet whose links replay now and then needs more,
# a quiet one fewer; two windows: a burst within minutes, a trickle within an hour.
REPLAY_WINDOWS_S: Final = (600, 3600)
MIN_RISES: Final = 2
REPLAY_FALSE_PER_GPU_HOUR: Final = 1e-6  # ~0.01 per 1,000 node-hours of 8 GPUs, per window


def _buckets(ctx: AnalysisContext) -> pl.DataFrame:
    """Per (node, gpu, b): busy clock and power, replay increase, slow-bit scrapes, from the
    shared grouped scan of every GPU (scans.gpu_buckets, ``BUCKET_S`` windows)."""
    return gpu_buckets(ctx).select("node", "gpu", "b", "clk", "pw", "rp", "slow_bits")


def job_of_node(ctx: AnalysisContext) -> pl.DataFrame:
    """(node, job, start_us, end_us): who held each node when."""
    rows = [(node, p.job, p.start_us, p.end_us if p.end_us is not None else 2**62)
            for p in ctx.projections.jobs.placements for node in p.nodes]
    return pl.DataFrame(rows, schema={"node": pl.String, "job": pl.String,
                                      "start_us": pl.Int64, "end_us": pl.Int64}, orient="row")


def detect_peers(ctx: AnalysisContext) -> list[Finding]:
    buckets = _buckets(ctx)
    if buckets.is_empty():
        return []
    findings, ranks = _node_findings(ctx, buckets)
    slow_nodes = {str(f.attrs["node"]) for f in findings}
    findings.extend(_gpu_findings(ctx, buckets, slow_nodes, ranks))
    return findings


def _node_findings(ctx: AnalysisContext, buckets: pl.DataFrame
                   ) -> tuple[list[Finding], pl.DataFrame]:
    """A node's median busy clock / power against the other nodes of its job (or, for a job of
    fewer than ``MIN_PEERS`` other nodes, every busy node at that moment). Also, per node and
    bucket, the job's reference for its ranks (``_job_ranks``)."""
    per_node = (buckets.group_by("node", "b")
                .agg(pl.col("clk").median(), pl.col("pw").median(),
                     pl.col("clk").is_not_null().sum().alias("busy"),
                     pl.col("clk").min().alias("min_clk"), pl.col("pw").min().alias("min_pw")))
    if per_node.filter(pl.col("busy") >= MIN_PEERS).is_empty():
        return [], pl.DataFrame()
    jobs = job_of_node(ctx)
    if not jobs.is_empty():
        per_node = (per_node.join(jobs, on="node", how="left")
                    .filter(pl.col("job").is_null()
                            | ((pl.col("start_us") <= pl.col("b"))
                               & (pl.col("b") < pl.col("end_us"))))
                    .unique(["node", "b"], keep="last", maintain_order=True))
    else:
        per_node = per_node.with_columns(pl.lit(None, pl.String).alias("job"))
    per_node = per_node.with_columns(pl.col("job").fill_null(""))
    ranks = _job_ranks(per_node)
    per_node = per_node.filter(pl.col("busy") >= MIN_PEERS)
    job_peers = per_node.group_by("job", "b").agg(
        pl.col("clk").median().alias("job_clk"), pl.col("pw").median().alias("job_pw"),
        pl.len().alias("job_n"))
    fleet = per_node.group_by("b").agg(pl.col("clk").median().alias("fleet_clk"),
                                       pl.col("pw").median().alias("fleet_pw"),
                                       pl.len().alias("fleet_n"))
    use_job = (pl.col("job") != "") & (pl.col("job_n") > MIN_PEERS)
    marked = (
        per_node.join(job_peers, on=["job", "b"], how="left").join(fleet, on="b", how="left")
        .with_columns(
            pl.when(use_job).then(pl.col("job_clk")).otherwise(pl.col("fleet_clk"))
            .alias("peer_clk"),
            pl.when(use_job).then(pl.col("job_pw")).otherwise(pl.col("fleet_pw"))
            .alias("peer_pw"),
            pl.when(use_job).then(pl.col("job_n")).otherwise(pl.col("fleet_n")).alias("peer_n"),
        )
        .filter(pl.col("peer_n") > MIN_PEERS)
        .with_columns((pl.col("clk") / pl.col("peer_clk")).alias("clk_ratio"),
                      (pl.col("pw") / pl.col("peer_pw")).alias("pw_ratio"))
        .with_columns(((pl.col("clk_ratio") <= NODE_CLOCK_RATIO)
                       | (pl.col("pw_ratio") <= NODE_POWER_RATIO)).fill_null(False).alias("low"))
        .sort("node", "b")
    )
    flagged = marked.filter(pl.col("low"))["node"].unique().to_list()
    findings: list[Finding] = []
    step = BUCKET_S * US
    for (node,), part in marked.filter(pl.col("node").is_in(flagged)).group_by(
            ["node"], maintain_order=True):
        b = part["b"].to_numpy()
        low = part["low"].to_numpy()
        # Consecutive buckets only: a gap in the node's busy buckets breaks the run.
        contiguous = np.concatenate([[True], np.diff(b) == step])
        for first, last in runs(low):
            k = first
            while k <= last:
                e = k
                while e + 1 <= last and contiguous[e + 1]:
                    e += 1
                if e - k + 1 >= NODE_BUCKETS:
                    findings.append(_node_finding(ctx, str(node), part, k, e))
                k = e + 1
    return findings, ranks


def _job_ranks(per_node: pl.DataFrame) -> pl.DataFrame:
    """(node, b, job, job_clk, job_pw, min_clk, min_pw): per node and bucket, the median busy
    clock and power of its job's ranks (the median of its nodes' medians, over the nodes with
    ``MIN_PEERS`` busy GPUs or more; jobs of more than ``MIN_PEERS`` such nodes), and the node's
    lowest GPU. A GPU is compared with its job's ranks on the other nodes as well as with its own
    node's GPUs: on a node whose other GPUs are too few or slow too, only the job tells."""
    ref = (per_node.filter((pl.col("busy") >= MIN_PEERS) & (pl.col("job") != ""))
           .group_by("job", "b").agg(pl.col("clk").median().alias("job_clk"),
                                     pl.col("pw").median().alias("job_pw"),
                                     pl.len().alias("job_n"))
           .filter(pl.col("job_n") > MIN_PEERS))
    return per_node.join(ref, on=["job", "b"]).select(
        "node", "b", "job", "job_clk", "job_pw", "min_clk", "min_pw")


def _node_finding(ctx: AnalysisContext, node: str, part: pl.DataFrame, first: int,
                  last: int) -> Finding:
    """The run of low buckets, timed at scrape level: the node's per-scrape median busy clock
    and power against its peers' median of that bucket, smoothed; the onset is the first
    scrape below, the detection ``PERSIST_SCRAPES`` smoothed scrapes below in a row."""
    seg = part[first:last + 1]
    clk, pw = (float(np.nanmin(seg["clk_ratio"].to_numpy())),
               float(np.nanmin(seg["pw_ratio"].to_numpy())))
    job = str(seg["job"][0])
    against = f"the other nodes of job {job}" if job else "the other busy nodes"
    step = BUCKET_S * US
    start, end = int(seg["b"][0]), int(seg["b"][-1]) + step
    busy = (f"s.util_pct >= {BUSY_UTIL} AND (CAST(coalesce(s.throttle_reasons, 0) AS UBIGINT) "
            f"& {THERMAL_BITS}) = 0")
    scrapes = query_pl(ctx.con,
        f"SELECT epoch_us(s.ts) AS t, median(s.sm_clock_mhz) FILTER (WHERE {busy}) AS clk, "
        f"median(s.power_w) FILTER (WHERE {busy}) AS pw, min(s.event_id) AS event_id "
        # make_timestamptz, not epoch_us(ts): a predicate on ts itself lets the zone maps skip
        # every row group outside the run (a scan of the run, not of the day).
        "FROM gpu_samples s WHERE s.node = ? AND s.ts >= make_timestamptz(?) "
        "AND s.ts < make_timestamptz(?) GROUP BY s.ts ORDER BY t", [node, start, end])
    peers = seg.select(pl.col("b"), pl.col("peer_clk"), pl.col("peer_pw"))
    # Scrapes with too few busy GPUs (a communication or checkpoint phase) say nothing either way.
    scrapes = (scrapes.filter(pl.col("clk").is_not_null())
               .with_columns((pl.col("t") - pl.col("t") % step).alias("b"))
               .join(peers, on="b", how="left")
               .with_columns(((pl.col("clk") / pl.col("peer_clk") <= NODE_CLOCK_RATIO)
                              | (pl.col("pw") / pl.col("peer_pw") <= NODE_POWER_RATIO))
                             .fill_null(False).alias("low")))
    low = scrapes["low"].to_numpy()
    ts = scrapes["t"].to_numpy()
    ids = scrapes["event_id"].to_list()
    onset, detect = start, start + NODE_BUCKETS * step
    evidence: tuple[str, ...] = ()
    if low.any():
        a = int(np.argmax(low))
        smooth = scrapes["low"].cast(pl.Float64).rolling_mean(PERSIST_SCRAPES).to_numpy()
        fired = np.flatnonzero(np.nan_to_num(smooth) >= 1.0)
        fire = int(fired[0]) if fired.size else len(ts) - 1
        onset, detect = int(ts[a]), int(ts[max(fire, a)])
        evidence = (ids[a], ids[max(fire, a)])
    return Finding(
        kind="node_slow", entity=c.node_entity(node), onset_us=onset, detect_us=detect,
        end_us=end,
        text=f"node {node} runs slow against {against}: busy SM clock {clk:.0%} and power "
        f"{pw:.0%} of their median",
        # Slower than its peers is no hardware evidence (analysis/evidence.py): the samples
        # are kept for the reader, not cited, so the advice is to investigate, not to drain.
        attrs={"node": node, "clock_ratio": round(clk, 3), "power_ratio": round(pw, 3),
               "job": job, "samples": evidence},
    )


def _gpu_findings(ctx: AnalysisContext, buckets: pl.DataFrame, slow_nodes: set[str],
                  ranks: pl.DataFrame) -> list[Finding]:
    """GPUs against the other busy GPUs of their node and the ranks of their job, slow bits,
    PCIe replay rates."""
    peer = buckets.with_columns(
        pl.col("clk").median().over("node", "b").alias("node_clk"),
        pl.col("pw").median().over("node", "b").alias("node_pw"),
        pl.col("clk").is_not_null().sum().over("node", "b").alias("busy"),
    )
    low = ((pl.col("busy") >= MIN_PEERS) & (
        (pl.col("clk") <= pl.col("node_clk") * CANDIDATE_CLOCK)
        | (pl.col("pw") <= pl.col("node_pw") * CANDIDATE_POWER))).fill_null(False)
    flagged = peer.filter(low | (pl.col("slow_bits") > 0) | (pl.col("rp").fill_null(0) > 0))
    # Keep the nodes where a GPU was low in two consecutive buckets, a counter rose or a slow
    # bit held for several scrapes.
    step = BUCKET_S * US
    per_gpu = (flagged.with_columns(low.alias("low")).sort("node", "gpu", "b")
               .with_columns((pl.col("low") & pl.col("low").shift(1).over("node", "gpu")
                              & ((pl.col("b") - pl.col("b").shift(1).over("node", "gpu"))
                                 == step)).fill_null(False).alias("twice")))
    rp = pl.col("rp").fill_null(0)
    per_gpu = per_gpu.group_by("node", "gpu").agg(
        pl.col("twice").any().alias("twice"), (rp > 0).sum().alias("rp_buckets"),
        rp.max().alias("rp_max"), pl.col("slow_bits").max().alias("bits"))
    # Replays in two buckets (a lone blip is in one); slow bits held.
    below_ranks = _rank_candidates(ranks, slow_nodes)
    nodes = set(per_gpu.filter(
        pl.col("twice") | (pl.col("rp_buckets") >= 2) | (pl.col("bits") >= SLOW_BIT_SCRAPES)
    )["node"].to_list()) | below_ranks
    if not nodes:
        return []
    rises = _replay_rises(buckets)
    ordered = sorted(nodes)
    findings: list[Finding] = []
    # The candidates' series a batch of nodes at a time: every rule below reads one node's GPUs
    # (windows over node/GPU), so batches change no finding, and memory stays bounded when many
    # nodes are candidates (a 2,048-node day has hundreds: all at once peaked over 20 GB).
    for i in range(0, len(ordered), SERIES_BATCH_NODES):
        findings.extend(_series_findings(ctx, ordered[i:i + SERIES_BATCH_NODES], slow_nodes,
                                         below_ranks, ranks, rises))
    return findings


def _series_findings(ctx: AnalysisContext, nodes: list[str], slow_nodes: set[str],
                     below_ranks: set[str], ranks: pl.DataFrame,
                     rises: dict[int, int]) -> list[Finding]:
    """The scrape-level rules (ratios to the node's GPUs and to the job's ranks, replays, slow
    bits) over the series of ``nodes``."""
    data = keyed_series(ctx, "gpu_samples", pl.DataFrame({"node": nodes}),
        "s.node, s.gpu, epoch_us(s.ts) AS t, s.util_pct AS util, s.sm_clock_mhz AS clk, "
        "s.power_w AS pw, s.pcie_replays AS rp, "
        "CAST(coalesce(s.throttle_reasons, 0) AS UBIGINT) AS throttle, s.event_id",
        then_by=["gpu"])
    busy = (pl.col("util") >= BUSY_UTIL) & ((pl.col("throttle") & THERMAL_BITS) == 0)
    data = data.with_columns(
        pl.when(busy).then(pl.col("clk")).alias("bclk"),
        pl.when(busy).then(pl.col("pw")).alias("bpw"),
        ((pl.col("throttle") & SLOW_BITS) != 0).alias("bits"),
    ).with_columns(
        pl.col("bclk").count().over("node", "t").alias("busy_n"),
        (pl.col("bclk") / pl.col("bclk").median().over("node", "t")).alias("clk_ratio"),
        (pl.col("bpw") / pl.col("bpw").median().over("node", "t")).alias("pw_ratio"),
        (pl.col("bits").cast(pl.Int32).sum().over("node", "t")
         / pl.len().over("node", "t")).alias("bit_share"),
    ).with_columns(
        pl.when(pl.col("busy_n") >= MIN_PEERS).then(pl.col("clk_ratio")).alias("clk_ratio"),
        pl.when(pl.col("busy_n") >= MIN_PEERS).then(pl.col("pw_ratio")).alias("pw_ratio"),
    )
    healthy = data.filter(~pl.col("node").is_in(list(slow_nodes)))
    findings = _ratio_findings(healthy, "node")
    findings.extend(_rank_findings(healthy.filter(pl.col("node").is_in(list(below_ranks))),
                                   ranks, findings))
    rp_rise = (pl.col("rp").max() - pl.col("rp").min()).over("node", "gpu")
    moving = data.filter(pl.col("bits").any().over("node", "gpu")
                         | (rp_rise.fill_null(0) >= MIN_RISES))
    node_bits_done: set[str] = set()
    for (node, gpu), part in moving.group_by(["node", "gpu"], maintain_order=True):
        node_s = str(node)
        entity = c.gpu_entity(node_s, int(gpu))
        ts = part["t"].to_numpy()
        ids = part["event_id"].to_list()
        findings.extend(_replay_findings(part, entity, node_s, ts, ids, rises))
        bits = part["bits"].to_numpy()
        share = part["bit_share"].to_numpy()
        for a, b in runs(bits):
            if b - a + 1 < SLOW_BIT_SCRAPES:
                continue
            fire = a + SLOW_BIT_SCRAPES - 1
            whole_node = float(np.median(share[a:b + 1])) >= NODE_BIT_SHARE
            if whole_node and node_s in node_bits_done:
                continue
            what = int(np.bitwise_or.reduce(part["throttle"].to_numpy()[a:b + 1]) & SLOW_BITS)
            names = " and ".join(n for bit, n in ((c.THROTTLE_HW_SLOWDOWN, "HW slowdown"),
                                                  (c.THROTTLE_POWER_BRAKE, "power brake"))
                                 if what & bit)
            if whole_node:
                node_bits_done.add(node_s)
                findings.append(Finding(
                    kind="node_throttled", entity=c.node_entity(node_s), onset_us=int(ts[a]),
                    detect_us=int(ts[fire]), end_us=int(ts[b]),
                    text=f"most GPUs of node {node_s} report {names} ({what:#x}) together: the "
                    "node's power delivery holds them back",
                    evidence=(ids[a], ids[fire]), attrs={"node": node_s, "bits": what},
                ))
            else:
                findings.append(Finding(
                    kind="hw_slowdown", entity=entity, onset_us=int(ts[a]),
                    detect_us=int(ts[fire]), end_us=int(ts[b]),
                    text=f"{entity} reports {names} ({what:#x}) for {b - a + 1} scrapes",
                    evidence=(ids[a], ids[fire]), attrs={"node": node_s, "bits": what},
                ))
    return findings


def _rank_candidates(ranks: pl.DataFrame, slow_nodes: set[str]) -> set[str]:
    """Nodes (not slow as a whole) with a GPU below its job's ranks in two consecutive
    buckets."""
    if ranks.is_empty():
        return set()
    step = BUCKET_S * US
    low = (((pl.col("min_clk") <= pl.col("job_clk") * CANDIDATE_CLOCK)
            | (pl.col("min_pw") <= pl.col("job_pw") * CANDIDATE_POWER)).fill_null(False))
    marked = (ranks.filter(~pl.col("node").is_in(list(slow_nodes))).sort("node", "b")
              .with_columns(low.alias("low"))
              .with_columns((pl.col("low") & pl.col("low").shift(1).over("node")
                             & ((pl.col("b") - pl.col("b").shift(1).over("node")) == step))
                            .fill_null(False).alias("twice")))
    return set(marked.filter(pl.col("twice"))["node"].to_list())


def _rank_findings(data: pl.DataFrame, ranks: pl.DataFrame,
                   node_found: list[Finding]) -> list[Finding]:
    """The same rules with the GPU's job's ranks as its peers (``_job_ranks``, per bucket): what
    its node's GPUs could not tell. A stretch its node's GPUs already told is theirs."""
    if ranks.is_empty() or data.is_empty():
        return []
    step = BUCKET_S * US
    against = (data.with_columns((pl.col("t") - pl.col("t") % step).alias("b"))
               .join(ranks.select("node", "b", "job_clk", "job_pw"), on=["node", "b"],
                     how="left")
               .with_columns((pl.col("bclk") / pl.col("job_clk")).alias("clk_ratio"),
                             (pl.col("bpw") / pl.col("job_pw")).alias("pw_ratio"))
               .sort("node", "gpu", "t"))
    told: dict[str, list[tuple[int, int]]] = {}
    for f in node_found:
        told.setdefault(f.entity, []).append((f.onset_us, f.end_us))
    return [f for f in _ratio_findings(against, "job")
            if not any(a <= f.end_us and f.onset_us <= b for a, b in told.get(f.entity, []))]


def _ratio_findings(data: pl.DataFrame, peers: str) -> list[Finding]:
    """``gpu_slow`` / ``gpu_power_low`` over the busy scrapes of every GPU in ``data`` at once
    (smoothing, usual offset, the CUSUM of each ratio), then a look at the few GPUs that went
    below. ``peers`` says whom the ratios are to: ``node`` (its node's other busy GPUs) or
    ``job`` (its job's ranks)."""
    over = ["node", "gpu"]
    usual = (pl.col("pw_ratio").shift(1).rolling_median(BASELINE_SCRAPES,
                                                        min_samples=BASELINE_MIN)
             .fill_null(1.0).clip(upper_bound=1.0)).over(over)
    busy = (data.filter(pl.col("clk_ratio").is_not_null())
            .with_columns(usual.alias("usual"))
            .with_columns(
                pl.col("clk_ratio").rolling_median(CLOCK_SMOOTH, min_samples=CLOCK_SMOOTH // 2 + 1)
                .over(over).fill_null(1.0).alias("clk_s"),
                (pl.col("pw_ratio").rolling_median(POWER_SMOOTH, min_samples=POWER_SMOOTH // 2 + 1)
                 .over(over) / pl.col("usual")).fill_null(1.0).alias("pw_s"),
                (pl.col("pw_ratio") / pl.col("usual")).alias("pw_raw"),
            )
            .with_columns(_noise(pl.col("clk_ratio"), over).alias("clk_sigma"),
                          _noise(pl.col("pw_raw"), over).alias("pw_sigma")))
    busy = busy.with_columns(
        *(pl.col(f"{x}_sigma").fill_null(pl.col(f"{x}_sigma").median()).fill_null(SIGMA_FLOOR)
          .clip(lower_bound=SIGMA_FLOOR) for x in ("clk", "pw")))
    busy = cusum_low(busy, "clk_cusum", 1.0 - pl.col("clk_ratio"), pl.col("clk_sigma"),
                     (1.0 - GPU_CLOCK_RATIO) / 2, CUSUM_CLIP, over)
    busy = cusum_low(busy, "pw_cusum", 1.0 - pl.col("pw_raw"), pl.col("pw_sigma"),
                     (1.0 - GPU_POWER_RATIO) / 2, CUSUM_CLIP, over)
    low = busy.filter(((pl.col("clk_s") <= GPU_CLOCK_RATIO) | (pl.col("pw_s") <= GPU_POWER_RATIO)
                       | (pl.col("clk_cusum") >= CUSUM_THRESHOLD)
                       | (pl.col("pw_cusum") >= CUSUM_THRESHOLD)).any().over(over))
    out: list[Finding] = []
    for (node, gpu), part in low.group_by(over, maintain_order=True):
        out.extend(_gpu_ratio_runs(part, c.gpu_entity(str(node), int(gpu)), str(node), peers))
    return out


def _noise(ratio: pl.Expr, over: list[str]) -> pl.Expr:
    """A GPU's own scrape-to-scrape noise in a ratio: the interquartile range of its previous
    ``BASELINE_SCRAPES`` busy scrapes over 1.349 (a standard deviation, were it Gaussian; a
    quartile is moved by no outlier)."""
    past = ratio.shift(1)
    q = {p: past.rolling_quantile(p, window_size=BASELINE_SCRAPES, min_samples=BASELINE_MIN)
         for p in (0.25, 0.75)}
    return ((q[0.75] - q[0.25]) / 1.349).over(over)


def _episodes(smooth_low: np.ndarray, raw: np.ndarray, limit: float, window: int,
              cusum: np.ndarray) -> list[tuple[int, int, int]]:
    """(onset, fire, end) of a GPU's low stretches: the smoothed ratio below ``limit`` for
    ``PERSIST_SCRAPES``, or its CUSUM past ``CUSUM_THRESHOLD``; overlapping ones are one
    stretch, timed by whichever fired first. Both lag the change, so the onset is its change
    point: scanning back from the crossing (over the smoothing window, or the CUSUM's run), the
    start of the stretch with the most raw scrapes below the ratio net of those above (each
    below +1, each above -1)."""
    found = []

    def onset(lo: int, at: int, below: float) -> int:
        signs = np.where(raw[lo:at + 1] <= below, 1, -1)[::-1].cumsum()
        return at - int(np.argmax(signs))

    for a, b in runs(smooth_low):
        if b - a + 1 >= PERSIST_SCRAPES:
            found.append((onset(max(0, a - window + 1), a, limit), a + PERSIST_SCRAPES - 1, b))
    found.extend((onset(a, fire, limit), fire, b)
                 for a, fire, b in cusum_episodes(cusum, CUSUM_THRESHOLD))
    merged: list[tuple[int, int, int]] = []
    for first, fire, end in sorted(found):
        if merged and first <= merged[-1][2]:
            o, f, e = merged[-1]
            merged[-1] = (o, min(f, fire), max(e, end))
        else:
            merged.append((first, fire, end))
    return merged


def _gpu_ratio_runs(part: pl.DataFrame, entity: str, node: str, peers: str
                    ) -> list[Finding]:
    out: list[Finding] = []
    ts = part["t"].to_numpy()
    ids = part["event_id"].to_list()
    clk = part["clk_s"].to_numpy().astype(np.float64)
    pw = part["pw_s"].to_numpy().astype(np.float64)
    raw_clk = np.nan_to_num(part["clk_ratio"].to_numpy().astype(np.float64), nan=1.0)
    raw_pw = np.nan_to_num(part["pw_raw"].to_numpy().astype(np.float64), nan=1.0)
    slow = _episodes(clk <= GPU_CLOCK_RATIO, raw_clk, GPU_CLOCK_RATIO, CLOCK_SMOOTH,
                     part["clk_cusum"].to_numpy())
    weak = _episodes(pw <= GPU_POWER_RATIO, raw_pw, GPU_POWER_RATIO, POWER_SMOOTH,
                     part["pw_cusum"].to_numpy())
    # A clock that falls takes the power with it: a power stretch within a clock stretch that
    # fired no later is that stretch's, not an SM stall of its own.
    weak = [w for w in weak if not any(s[0] <= w[2] and w[0] <= s[2] and s[1] <= w[1]
                                       for s in slow)]
    for kind, episodes in (("gpu_slow", slow), ("gpu_power_low", weak)):
        for onset, fire, end in episodes:
            seg = slice(onset, end + 1)
            lo_c = float(min(clk[seg].min(), np.median(raw_clk[seg])))
            lo_p = float(min(pw[seg].min(), np.median(raw_pw[seg])))
            whose = "its node's" if peers == "node" else "its job's ranks'"
            text = (f"{entity} runs at {lo_c:.0%} of {whose} busy SM clock ({lo_p:.0%} of "
                    "their power) with no thermal throttle" if kind == "gpu_slow" else
                    f"{entity} draws {lo_p:.0%} of {whose} busy power at full clock: its "
                    "SMs stall (NVLink or memory path degraded?)")
            out.append(Finding(
                kind=kind, entity=entity, onset_us=int(ts[onset]), detect_us=int(ts[fire]),
                end_us=int(ts[end]), text=text,
                # no hardware evidence (analysis/evidence.py): kept, not cited
                attrs={"node": node, "clock_ratio": round(lo_c, 3), "power_ratio": round(lo_p, 3),
                       "against": peers, "samples": (ids[onset], ids[fire])},
            ))
    return out


def _replay_rises(buckets: pl.DataFrame) -> dict[int, int]:
    """Window seconds -> the separate rising scrapes within it that fire (see
    ``REPLAY_WINDOWS_S``): the background rate per GPU-hour from the share ``p`` of the
    analyzed GPUs whose counter rose at all over the span ``T`` (Poisson: ``-ln(1 - p) / T``),
    then the smallest ``n`` whose false rate, ``rate * P(N >= n - 1)`` over a window (a rise
    with n - 1 more in the window before it), is under ``REPLAY_FALSE_PER_GPU_HOUR``."""
    per_gpu = buckets.group_by("node", "gpu").agg(pl.col("rp").fill_null(0).max().alias("rp"))
    span_us = buckets.select(pl.col("b").max() - pl.col("b").min()).item()
    span_h = (int(span_us or 0) + BUCKET_S * US) / US / 3600
    rose = max(1, int((per_gpu["rp"] > 0).sum()))
    rate = -math.log(1.0 - min(rose / max(per_gpu.height, 1), 0.999)) / span_h
    out = {}
    for window_s in REPLAY_WINDOWS_S:
        mean = rate * window_s / 3600
        n, below = MIN_RISES, 0.0  # below: P(N <= n - 2)
        for k in range(MIN_RISES - 1):
            below += math.exp(-mean) * mean ** k / math.factorial(k)
        while rate * (1.0 - below) > REPLAY_FALSE_PER_GPU_HOUR and n < 64:
            below += math.exp(-mean) * mean ** (n - 1) / math.factorial(n - 1)
            n += 1
        out[window_s] = n
    return out


def _replay_findings(part: pl.DataFrame, entity: str, node: str, ts: np.ndarray,
                     ids: list[str], rises: dict[int, int]) -> list[Finding]:
    values = part["rp"].to_numpy()
    counts = np.cumsum(increments(values) > 0).astype(np.float64)
    out: list[Finding] = []
    seen_until = -1
    episodes = [ep for window_s, n in rises.items()
                for ep in rising_episodes(ts, counts, window_s * US, n, min_rises=n)]
    for ep in sorted(episodes, key=lambda e: e.detect_us):
        if ep.onset_us <= seen_until:
            continue  # the other window's view of the same trend
        seen_until = ep.end_us
        total = float(np.nansum(increments(values)[ep.onset_index:ep.detect_index + 1]))
        out.append(Finding(
            kind="pcie_replays", entity=entity, onset_us=ep.onset_us, detect_us=ep.detect_us,
            end_us=ep.end_us,
            text=f"PCIe replays rising on {entity}: +{total:.0f} in {ep.total:.0f} scrapes "
            f"over {(ep.detect_us - ep.onset_us) / US / 60:.0f} min (a link retraining)",
            evidence=(ids[ep.onset_index], ids[ep.detect_index]),
            attrs={"node": node, "increase": total, "rising_scrapes": ep.total},
        ))
    return out
