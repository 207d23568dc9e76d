"""Peer-relative GPU and node detectors: the fail-slow (gray) parts no error counter names.

A part that runs slow shows only against its peers: the other GPUs of its node (same job, same
phase, same cooling, same collectives) and, for a whole node, the other nodes of its job. Fixed
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
- ``pcie_replays`` rising as a rate, over a short and a long window, in several separate scrapes
  (``pcie_replays``): a PCIe link retraining; one isolated jump is a blip, not a trend;
- a node's median clock or power at high utilization below the other nodes of its job
  (``node_slow``): a node held at a power cap (every GPU of it low, so no GPU stands out against
  its own node).

Scale (a 2,048-node day is ~140 M rows): the shared grouped scan (``scans.gpu_buckets``) buckets
every GPU into ``BUCKET_S`` windows (busy clock and power, replays, slow-bit scrapes) with its
node's medians; those pick the few nodes worth a look and the stretches of time around what
picked them (``scans.flagged_windows``); the scrape-level rules run on those stretches only (a
day's hung job flagged 160 nodes for ten minutes: 11.4 M rows read whole, ~2 M this way).
"""

from __future__ import annotations

from typing import Final

import numpy as np
import polars as pl

from fleetlog.analysis.context import US, AnalysisContext, Finding, query_pl
from fleetlog.analysis.detectors.scans import (
    GPU_BUCKET_S,
    SLOW_BITS,
    busy_expr,
    busy_sql,
    cite,
    flagged_windows,
    gpu_buckets,
    job_of_node,
    keyed_series,
    row_ref,
)
from fleetlog.analysis.detectors.series import rising_episodes, runs
from fleetlog.ingest import contract as c

BUCKET_S: Final = GPU_BUCKET_S  # first-pass bucket: fine enough to find a slow node in minutes
MIN_PEERS: Final = 3  # fewer busy peers than this: no median worth comparing with
# Ratios to the peers' median. Healthy busy GPUs of one node agree within ~1 % (one standard
# deviation) in clock and ~4-5 % per scrape in power, so power is smoothed over more scrapes
# (the median of POWER_SMOOTH scrapes varies by ~1 %); each threshold sits many of those
# deviations out, and a part slowing a job by 10 % or more is past them.
GPU_CLOCK_RATIO: Final = 0.9
GPU_POWER_RATIO: Final = 0.93
# A deep power drop shows sooner: over CLOCK_SMOOTH scrapes (whose median varies by ~2 %).
GPU_POWER_FAST_RATIO: Final = 0.85
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
# (window seconds, increase that fires): a burst within minutes, or a trickle within an hour.
REPLAY_RULES: Final = ((300, 10.0), (3600, 4.0))
MIN_RISES: Final = 3  # separate scrapes the counter rose in: a one-off blip is not a trend
# One series of the second pass: a GPU over one stretch its node was read for (scans.keyed_series).
SERIES: Final = ["node", "gpu", "w"]


def _buckets(ctx: AnalysisContext) -> pl.DataFrame:
    """Per (node, gpu, b): busy clock and power, replay increase, slow-bit scrapes, from the
    shared grouped scan of every GPU (scans.gpu_buckets, ``BUCKET_S`` windows)."""
    return gpu_buckets(ctx)



def detect_peers(ctx: AnalysisContext) -> list[Finding]:
    buckets = _buckets(ctx)
    if buckets.is_empty():
        return []
    findings = _node_findings(ctx, buckets)
    slow_nodes = {str(f.attrs["node"]) for f in findings}
    findings.extend(_gpu_findings(ctx, buckets, slow_nodes))
    return findings


def _node_findings(ctx: AnalysisContext, buckets: pl.DataFrame) -> list[Finding]:
    """A node's median busy clock / power against the other nodes of its job (or, for a job of
    fewer than ``MIN_PEERS`` other nodes, every busy node at that moment)."""
    per_node = buckets.filter(pl.col("lead") & (pl.col("busy") >= MIN_PEERS)).select(
        "node", "b", pl.col("node_clk").alias("clk"), pl.col("node_pw").alias("pw"), "busy")
    if per_node.is_empty():
        return []
    jobs = job_of_node(ctx)
    if not jobs.is_empty():
        # The job holding the node at each bucket: the latest placement started by then, if it
        # had not ended (an as-of join: a join on the node alone was ~6 placements a node).
        per_node = (per_node.sort("b")
                    .join_asof(jobs.sort("start_us"), left_on="b", right_on="start_us",
                               by="node", strategy="backward", check_sortedness=False)
                    .with_columns(pl.when(pl.col("b") < pl.col("end_us")).then(pl.col("job"))
                                  .alias("job")))
    else:
        per_node = per_node.with_columns(pl.lit(None, pl.String).alias("job"))
    per_node = per_node.with_columns(pl.col("job").fill_null(""))
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
    return findings


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
    busy = busy_sql("s.")
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


def _gpu_findings(ctx: AnalysisContext, buckets: pl.DataFrame,
                  slow_nodes: set[str]) -> list[Finding]:
    """GPUs against the other busy GPUs of their node, slow bits, PCIe replay rates."""
    peer = buckets  # with its node's medians at each bucket (scans.gpu_buckets)
    low = ((pl.col("busy") >= MIN_PEERS) & (
        (pl.col("clk") <= pl.col("node_clk") * CANDIDATE_CLOCK)
        | (pl.col("pw") <= pl.col("node_pw") * CANDIDATE_POWER))).fill_null(False)
    flagged = peer.filter(low | (pl.col("slow_bits") > 0) | (pl.col("rp").fill_null(0) > 0))
    if flagged.is_empty():
        return []
    # Keep the nodes where a GPU was low in two consecutive buckets, a counter rose or a slow
    # bit held for several scrapes.
    step = BUCKET_S * US
    per_gpu_flags = (flagged.with_columns(low.alias("low")).sort("node", "gpu", "b")
                     .with_columns((pl.col("low") & pl.col("low").shift(1).over("node", "gpu")
                                    & ((pl.col("b") - pl.col("b").shift(1).over("node", "gpu"))
                                       == step)).fill_null(False).alias("twice")))
    rp = pl.col("rp").fill_null(0)
    per_gpu = per_gpu_flags.group_by("node", "gpu").agg(
        pl.col("twice").any().alias("twice"), (rp > 0).sum().alias("rp_buckets"),
        rp.max().alias("rp_max"), pl.col("slow_bits").max().alias("bits"))
    # Replays in two buckets or a burst in one (a lone blip is neither); slow bits held.
    nodes = per_gpu.filter(
        pl.col("twice") | (pl.col("rp_buckets") >= 2) | (pl.col("rp_max") >= min(
            t for _w, t in REPLAY_RULES[:1])) | (pl.col("bits") >= SLOW_BIT_SCRAPES)
    ).select("node").unique()
    if nodes.is_empty():
        return []
    # Those nodes' series around what picked them: the pairs of low buckets, the buckets a
    # replay counter rose or a slow bit was seen in (a lone low bucket is neither, and a big
    # job's GPUs each have a few in a day). From the look-back the rules need before (the
    # usual power ratio's busy scrapes and their smoothing, read as twice their time: a GPU is
    # not busy in every scrape, and one busy less than half the time gets its usual from fewer)
    # to as long after (a run goes on while its smoothed ratio stays low, past the buckets).
    flags = (per_gpu_flags.filter(pl.col("twice")).with_columns(
                 pl.concat_list(pl.col("b") - step, pl.col("b")).alias("b")).explode("b")
             .select("node", "b"))
    flags = pl.concat([flags, flagged.filter((pl.col("slow_bits") > 0)
                                             | (pl.col("rp").fill_null(0) > 0))
                       .select("node", "b")]).join(nodes, on="node", how="semi")
    before = 2 * (BASELINE_SCRAPES + POWER_SMOOTH) * ctx.interval_us + step
    windows = flagged_windows(ctx, flags, ["node"], BUCKET_S, before, before)
    data = keyed_series(ctx, "gpu_samples", windows,
        "s.node, s.gpu, epoch_us(s.ts) AS t, s.util_pct AS util, s.sm_clock_mhz AS clk, "
        "s.power_w AS pw, s.pcie_replays AS rp, "
        "CAST(coalesce(s.throttle_reasons, 0) AS UBIGINT) AS throttle",
        then_by=["gpu"])
    busy = busy_expr()
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
    findings = _ratio_findings(data.filter(~pl.col("node").is_in(list(slow_nodes))))
    rp_rise = (pl.col("rp").max() - pl.col("rp").min()).over(SERIES)
    moving = data.filter(pl.col("bits").any().over(SERIES)
                         | (rp_rise.fill_null(0) >= min(t for _w, t in REPLAY_RULES)))
    node_bits_done: set[str] = set()
    for (node, gpu, _w), part in moving.group_by(SERIES, maintain_order=True):
        node_s = str(node)
        entity = c.gpu_entity(node_s, int(gpu))
        ts = part["t"].to_numpy()
        ids = [row_ref(node_s, int(gpu), t) for t in ts.tolist()]
        findings.extend(_replay_findings(part, entity, node_s, ts, ids))
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
    return cite(ctx, "gpu_samples", ("node", "gpu"), findings)


def _ratio_findings(data: pl.DataFrame) -> list[Finding]:
    """``gpu_slow`` / ``gpu_power_low`` over the busy scrapes of every GPU in ``data`` at once
    (smoothing, usual offset), then a look at the few GPUs that went below."""
    def smooth(column: str, window: int) -> pl.Expr:
        return pl.col(column).rolling_median(window, min_samples=window // 2 + 1).over(SERIES)

    busy = data.filter(pl.col("clk_ratio").is_not_null()).with_columns(
        smooth("clk_ratio", CLOCK_SMOOTH).fill_null(1.0).alias("clk_s"),
        smooth("pw_ratio", POWER_SMOOTH).alias("pw_m"),
        smooth("pw_ratio", CLOCK_SMOOTH).alias("pw_fm"),
    )
    # The usual ratio (a rolling median over BASELINE_SCRAPES: the costly part) only for the
    # GPUs that could fire: it is never above 1, so a smoothed power ratio that never goes below
    # the thresholds (nor to 0 or under, where dividing flips) cannot go below them divided by it.
    could = ((pl.col("clk_s") <= GPU_CLOCK_RATIO) | (pl.col("pw_m") <= GPU_POWER_RATIO)
             | (pl.col("pw_fm") <= GPU_POWER_FAST_RATIO) | (pl.col("pw_ratio") <= 0))
    usual = (pl.col("pw_ratio").shift(1).rolling_median(BASELINE_SCRAPES,
                                                        min_samples=BASELINE_MIN)
             .fill_null(1.0).clip(upper_bound=1.0)).over(SERIES)
    busy = (busy.filter(could.any().over(SERIES))
            .with_columns(usual.alias("usual"))
            .with_columns(
                (pl.col("pw_m") / pl.col("usual")).fill_null(1.0).alias("pw_s"),
                (pl.col("pw_fm") / pl.col("usual")).fill_null(1.0).alias("pw_f"),
                (pl.col("pw_ratio") / pl.col("usual")).alias("pw_raw"),
            ))
    low = busy.filter(((pl.col("clk_s") <= GPU_CLOCK_RATIO) | (pl.col("pw_s") <= GPU_POWER_RATIO)
                       | (pl.col("pw_f") <= GPU_POWER_FAST_RATIO)).any().over(SERIES))
    out: list[Finding] = []
    for (node, gpu, _w), part in low.group_by(SERIES, maintain_order=True):
        out.extend(_gpu_ratio_runs(part, c.gpu_entity(str(node), int(gpu)), str(node)))
    return out


def _gpu_ratio_runs(part: pl.DataFrame, entity: str, node: str) -> list[Finding]:
    out: list[Finding] = []
    ts = part["t"].to_numpy()
    gpu = int(part["gpu"][0])
    ids = [row_ref(node, gpu, t) for t in ts.tolist()]
    clk = part["clk_s"].to_numpy().astype(np.float64)
    pw = part["pw_s"].to_numpy().astype(np.float64)
    pw_fast = part["pw_f"].to_numpy().astype(np.float64)
    raw_clk = np.nan_to_num(part["clk_ratio"].to_numpy().astype(np.float64), nan=1.0)
    raw_pw = np.nan_to_num(part["pw_raw"].to_numpy().astype(np.float64), nan=1.0)
    slow = clk <= GPU_CLOCK_RATIO
    weak = ((pw <= GPU_POWER_RATIO) | (pw_fast <= GPU_POWER_FAST_RATIO)) & ~slow
    for mask, kind in ((slow, "gpu_slow"), (weak, "gpu_power_low")):
        for a, b in runs(mask):
            if b - a + 1 < PERSIST_SCRAPES:
                continue
            fire = a + PERSIST_SCRAPES - 1
            # The smoothed ratio lags: the onset is the change point within the window behind
            # the crossing, the start of the stretch with the most raw scrapes below the ratio
            # net of those above (scanning back, each below +1, each above -1).
            raw, limit, window = ((raw_clk, GPU_CLOCK_RATIO, CLOCK_SMOOTH) if kind == "gpu_slow"
                                  else (raw_pw, GPU_POWER_RATIO, POWER_SMOOTH))
            lo = max(0, a - window + 1)
            signs = np.where(raw[lo:a + 1] <= limit, 1, -1)[::-1].cumsum()
            onset = a - int(np.argmax(signs))
            lo_c, lo_p = float(clk[a:b + 1].min()), float(min(pw[a:b + 1].min(),
                                                               pw_fast[a:b + 1].min()))
            text = (f"{entity} runs at {lo_c:.0%} of its node's busy SM clock ({lo_p:.0%} of "
                    "their power) with no thermal throttle" if kind == "gpu_slow" else
                    f"{entity} draws {lo_p:.0%} of its node's busy power at full clock: its "
                    "SMs stall (NVLink or memory path degraded?)")
            out.append(Finding(
                kind=kind, entity=entity, onset_us=int(ts[onset]), detect_us=int(ts[fire]),
                end_us=int(ts[b]), text=text,
                # no hardware evidence (analysis/evidence.py): kept, not cited
                attrs={"node": node, "clock_ratio": round(lo_c, 3), "power_ratio": round(lo_p, 3),
                       "samples": (ids[onset], ids[fire])},
            ))
    return out


def _replay_findings(part: pl.DataFrame, entity: str, node: str, ts: np.ndarray,
                     ids: list[str]) -> list[Finding]:
    values = part["rp"].to_numpy()
    out: list[Finding] = []
    seen_until = -1
    episodes = [ep for window_s, threshold in REPLAY_RULES
                for ep in rising_episodes(ts, values, window_s * US, threshold,
                                          min_rises=MIN_RISES)]
    for ep in sorted(episodes, key=lambda e: e.detect_us):
        if ep.onset_us <= seen_until:
            continue  # the other window's view of the same trend
        seen_until = ep.end_us
        out.append(Finding(
            kind="pcie_replays", entity=entity, onset_us=ep.onset_us, detect_us=ep.detect_us,
            end_us=ep.end_us,
            text=f"PCIe replays rising on {entity}: +{ep.total:.0f} over "
            f"{(ep.end_us - ep.onset_us) / US / 60:.0f} min (a link retraining)",
            evidence=(ids[ep.onset_index], ids[ep.detect_index]),
            attrs={"node": node, "increase": ep.total},
        ))
    return out
