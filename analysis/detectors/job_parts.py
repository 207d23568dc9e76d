"""A slowed job, localized to the GPU that slows it (``gpu_slows_job``).

A synchronous job runs at the pace of its slowest rank, so the first sign of a part running
slow is often the job's own step time, seconds after the part degrades, while the part's own
signal is still too weak to stand alone: a single PCIe replay or NVLink CRC error (a blip until
the next arrives), a power ratio a few percent under its node's other GPUs (inside a single
GPU's per-scrape spread for minutes). Each weak signal alone would be a false alarm across a
fleet; joined with a job that just got slower and found on exactly one GPU of that job's nodes,
it names the part (issue #19: a 10 % slowdown found within 5 minutes).

Rules (docs/faults.md#fail-slow-gray-faults):

- the job slowed: the median of its last ``RUN_STEPS`` step times at least ``SLOW_SHARE`` (or
  ``NOISE_SPREADS`` of its own step-time spreads, whichever is more) above the median of its
  previous ``BASE_STEPS`` (the straggler rule of ``jobs.py`` waits for 25 %);
- on exactly one GPU of the nodes the job held, within ``LOOKBACK_S`` before the slowdown to
  ``EVIDENCE_S`` after it, either a rise of ``pcie_replays`` or ``nvlink_crc_flit_errors``, or a
  busy power or SM clock ratio to its node's other busy GPUs (over its own usual ratio, averaged
  since the slowdown) at most ``RATIO_WEAK`` and an outlier among the job's GPUs (``Z_OUTLIER``
  robust deviations below their median, no other GPU half as far out). A lone counter rise
  counts only where the fleet's own rate of GPUs whose counter rose at all puts at most
  ``CHANCE_MAX`` such rises among the job's GPUs in that window by chance (a 500-node job
  always has a blip somewhere).

A slowdown with no such GPU stays the straggler's (a job-level finding); two candidate GPUs
are no localization either. The finding cites no samples: a slower job and a weak signal are
not hardware evidence to drain on (analysis/evidence.py); the samples are kept for the reader.
Cost: the job steps are already read (``jobs.job_frame``); GPU samples are read only for the
nodes of the few slowed jobs, around their slowdowns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import polars as pl

from fleetlog.analysis.context import US, AnalysisContext, Finding
from fleetlog.analysis.detectors.jobs import job_frame, segments
from fleetlog.analysis.detectors.scans import busy_expr, gpu_buckets, gpu_summary, keyed_series
from fleetlog.ingest import contract as c

SLOW_SHARE: Final = 0.07  # the 10 % slowdown, with room for its first steps
NOISE_SPREADS: Final = 6.0  # of the job's median absolute step-time deviation (~4 sigma)
BASE_STEPS: Final = 30
BASE_MIN: Final = 10
RUN_STEPS: Final = 3  # a median of three: one slow step (a data-loader hiccup) is no slowdown
LOOKBACK_S: Final = 15 * 60  # a part's counters may start before the job feels it
EVIDENCE_S: Final = 10 * 60  # how long after the slowdown the part's signal may show
MIN_PEERS: Final = 3  # busy GPUs of a node for a ratio to their median
MIN_SCRAPES: Final = 3  # busy scrapes since the slowdown before a ratio counts
USUAL_MIN: Final = 30  # busy scrapes before the slowdown to know a GPU's usual ratio
RATIO_WEAK: Final = 0.95
Z_OUTLIER: Final = 6.0
MAD_FLOOR: Final = 0.005  # a job whose GPUs agree better than this is not that precise
# A lone counter rise names a GPU only where chance would rarely put one among the job's GPUs
# in the window: at most this many expected, from the fleet's own rate of GPUs whose replay or
# CRC counter rose at all (a fleet where some links always replay a little sets it higher).
CHANCE_MAX: Final = 0.2


@dataclass(frozen=True)
class _Slowdown:
    job: str
    onset_us: int
    detect_us: int
    end_us: int
    share: float  # how much slower at detection (0.1: 10 %)
    event_ids: tuple[str, str]


def detect_job_parts(ctx: AnalysisContext) -> list[Finding]:
    findings = []
    for slow in _slowdowns(ctx):
        nodes = ctx.projections.jobs.nodes_at(slow.job, slow.onset_us)
        if nodes:
            found = _localize(ctx, slow, nodes)
            if found is not None:
                findings.append(found)
    return findings


def _slowdowns(ctx: AnalysisContext) -> list[_Slowdown]:
    """Each run of a job's steps whose median of ``RUN_STEPS`` is over its threshold."""
    frame = job_frame(ctx)
    steps = segments(frame).filter((pl.col("type") == "job.step_reported")
                                   & pl.col("step_time_s").is_not_null())
    if steps.is_empty():
        return []
    over = ["job", "segment"]
    step = pl.col("step_time_s")
    # Cheap first: a run can only be slow where its recent steps beat the fastest of the base
    # window by SLOW_SHARE (the base median is never below that minimum); the medians below
    # then run on those few runs only (a 2,048-node day: 1.4 M steps, a few runs left).
    steps = steps.filter((step.rolling_median(RUN_STEPS)
                          >= step.shift(1).rolling_min(BASE_STEPS, min_samples=BASE_MIN)
                          * (1.0 + SLOW_SHARE)).fill_null(False).any().over(over))
    if steps.is_empty():
        return []
    marked = (
        steps.lazy().with_row_index("row")
        .with_columns(step.shift(1).rolling_median(BASE_STEPS, min_samples=BASE_MIN)
                      .over(over).alias("base"))
        .with_columns((step / pl.col("base") - 1.0).abs().shift(1)
                      .rolling_median(BASE_STEPS, min_samples=BASE_MIN).over(over)
                      .alias("spread"),
                      step.rolling_median(RUN_STEPS).over(over).alias("recent"))
        .with_columns((pl.col("base") * (1.0 + pl.max_horizontal(
            pl.lit(SLOW_SHARE), pl.col("spread") * NOISE_SPREADS))).alias("limit"))
        .with_columns((pl.col("recent") >= pl.col("limit")).fill_null(False).alias("slow"))
        .collect()
    )
    # The first step of each slow run (a handful a day): where the job was found slower.
    firsts = marked.filter(pl.col("slow") & ~pl.col("slow").shift(1).fill_null(False)
                           .over(over))
    if firsts.is_empty():
        return []
    out = []
    for r in firsts.iter_rows(named=True):
        row = int(r["row"])
        rest = marked.slice(row, None)
        # the run lasts while the median of the last steps stays over the limit
        stop = rest.select(pl.col("slow").not_().arg_true().first()).item()
        run = rest.head(stop if stop is not None else rest.height)
        same = (run["job"] == r["job"]) & (run["segment"] == r["segment"])
        end = int(run.filter(same)["t"][-1])
        # the first of the last RUN_STEPS steps that was itself over the limit: the onset
        back = marked.slice(max(row - RUN_STEPS + 1, 0), min(row, RUN_STEPS - 1) + 1).filter(
            (pl.col("job") == r["job"]) & (pl.col("segment") == r["segment"])
            & (pl.col("step_time_s") >= r["limit"]))
        began = back.row(0, named=True) if back.height else r
        out.append(_Slowdown(str(r["job"]), int(began["t"]), int(r["t"]), end,
                             float(r["recent"] / r["base"] - 1.0),
                             (str(began["event_id"]), str(r["event_id"]))))
    return out


def _localize(ctx: AnalysisContext, slow: _Slowdown, nodes: tuple[str, ...]) -> Finding | None:
    """The one GPU of ``nodes`` with a weak signal around ``slow``, as a finding, or None."""
    start = max(slow.onset_us - LOOKBACK_S * US, ctx.read_from_us)
    until = min(slow.onset_us + EVIDENCE_S * US, ctx.until_us)
    stretches = pl.DataFrame({"node": list(nodes)}).with_columns(
        pl.lit(start).alias("lo"), pl.lit(until).alias("hi"))
    data = keyed_series(ctx, "gpu_samples", stretches,
        "s.node, s.gpu, epoch_us(s.ts) AS t, s.util_pct AS util, "
        "s.sm_clock_mhz AS clk, s.power_w AS pw, s.pcie_replays AS rp, "
        "s.nvlink_crc_flit_errors AS crc, "
        "CAST(coalesce(s.throttle_reasons, 0) AS UBIGINT) AS throttle, s.event_id",
        then_by=["gpu"]).drop("w")
    if data.is_empty():
        return None
    gpus = data.select("node", "gpu").n_unique()
    chance = _rises_per_gpu_hour(ctx) * gpus * (until - start) / US / 3600
    counter = _counter_rise(data) if chance <= CHANCE_MAX else None
    candidates = [x for x in (counter, _ratio_outlier(data, slow)) if x is not None]
    if not candidates:
        return None
    if len({(node, gpu) for node, gpu, *_ in candidates}) > 1:
        return None  # two GPUs point two ways: no localization
    node, gpu, first_us, seen_us, what, sample = min(candidates, key=lambda x: x[3])
    entity = c.gpu_entity(node, gpu)
    return Finding(
        kind="gpu_slows_job", entity=entity, onset_us=min(slow.onset_us, first_us),
        detect_us=max(slow.detect_us, seen_us), end_us=max(slow.end_us, seen_us),
        text=f"job {slow.job} ran {slow.share:.0%} slower than its recent steps and only "
        f"{entity} of its GPUs shows {what}: it slows the job",
        # no hardware evidence (analysis/evidence.py): the samples are kept, not cited
        attrs={"node": node, "job": slow.job, "nodes": nodes, "signal": what,
               "slowdown": round(slow.share, 3), "samples": (sample, *slow.event_ids)},
    )


Candidate = tuple[str, int, int, int, str, str]  # node, gpu, first sign, localized at, what, id


def _rises_per_gpu_hour(ctx: AnalysisContext) -> float:
    """The fleet's background: the share of GPUs whose PCIe replay or NVLink CRC counter rose
    at all in the read window, per hour of it (each GPU counted once, so a degrading part that
    rises all day weighs no more than a blip)."""
    def build() -> float:
        summary = gpu_summary(ctx)
        if summary.is_empty():
            return 0.0
        rose = (gpu_buckets(ctx).filter(pl.col("rp") > 0).select("node", "gpu")
                .vstack(summary.filter(pl.col("nvl") > 0).select("node", "gpu"))
                .n_unique())
        hours = max((ctx.until_us - ctx.read_from_us) / US / 3600, 1.0)
        return rose / summary.height / hours
    return ctx.shared("job_parts.rises_per_gpu_hour", build)


def _counter_rise(data: pl.DataFrame) -> Candidate | None:
    """The one GPU whose PCIe replay or NVLink CRC counter rose, with when it first rose."""
    rises = (data.with_columns(*(pl.col(name).diff().over("node", "gpu").alias(name)
                                 for name in ("rp", "crc")))
             .filter((pl.col("rp") > 0) | (pl.col("crc") > 0)))
    if rises.is_empty() or rises.select("node", "gpu").n_unique() > 1:
        return None
    first = rises.row(0, named=True)
    what = ("a PCIe replay" if (first["rp"] or 0) > 0 else "NVLink CRC errors")
    return (str(first["node"]), int(first["gpu"]), int(first["t"]), int(first["t"]),
            f"{what} (+{rises.height} rises)", str(first["event_id"]))


def _ratio_outlier(data: pl.DataFrame, slow: _Slowdown) -> Candidate | None:
    """The one GPU whose busy power or clock, to its node's other busy GPUs and over its own
    usual ratio, averaged since the slowdown, stands out low among the job's GPUs."""
    busy = busy_expr()
    at = ["node", "t"]
    frame = (data.with_columns(pl.when(busy).then(pl.col("clk")).alias("bclk"),
                               pl.when(busy).then(pl.col("pw")).alias("bpw"))
             .with_columns(pl.col("bclk").count().over(at).alias("busy_n"))
             .filter((pl.col("busy_n") >= MIN_PEERS) & pl.col("bclk").is_not_null())
             .with_columns((pl.col("bclk") / pl.col("bclk").median().over(at)).alias("clk_r"),
                           (pl.col("bpw") / pl.col("bpw").median().over(at)).alias("pw_r")))
    before = frame.filter(pl.col("t") < slow.onset_us)
    usual = (before.group_by("node", "gpu")
             .agg(*(pl.when(pl.len() >= USUAL_MIN).then(pl.col(r).median())
                    .otherwise(1.0).clip(upper_bound=1.0).alias(f"u_{r}")
                    for r in ("clk_r", "pw_r"))))
    after = (frame.filter(pl.col("t") >= slow.onset_us)
             # in time order per GPU (the running means below are causal)
             .join(usual, on=["node", "gpu"], how="left", maintain_order="left")
             .with_columns(*(
                 (pl.col(r) / pl.col(f"u_{r}").fill_null(1.0)).clip(0.5, 1.5)
                 .cum_sum().over("node", "gpu") / pl.int_range(1, pl.len() + 1)
                 .over("node", "gpu") for r in ("clk_r", "pw_r")),
                 pl.int_range(1, pl.len() + 1).over("node", "gpu").alias("n")))
    if after.is_empty():
        return None
    best: Candidate | None = None
    for name, what in (("pw_r", "power"), ("clk_r", "SM clock")):
        found = _first_outlier(after, name)
        if found is not None and (best is None or found[1] < best[3]):
            (node, gpu), t, value, sample = found
            best = (node, gpu, t, t, f"its busy {what} at {value:.0%} of its node's other GPUs",
                    sample)
    return best


def _first_outlier(after: pl.DataFrame, name: str
                   ) -> tuple[tuple[str, int], int, float, str] | None:
    """The first scrape time at which exactly one GPU's running mean of ``name`` is low and an
    outlier among the job's GPUs, each at its latest value up to that time (causal: what was
    known then). One matrix of scrape times by GPUs, carried forward: a 536-node job's ~4,300
    GPUs over the window are a few hundred thousand cells."""
    frame = after.select("node", "gpu", "t", "n", "event_id", pl.col(name).alias("v"))
    gpus = frame.select("node", "gpu").unique().sort("node", "gpu")
    frame = frame.join(gpus.with_row_index("g"), on=["node", "gpu"])
    times, at = np.unique(frame["t"].to_numpy(), return_inverse=True)
    col = frame["g"].to_numpy().astype(np.intp)
    shape = (len(times), gpus.height)
    value = np.full(shape, np.nan)
    count = np.zeros(shape)
    row_of = np.full(shape, -1, dtype=np.intp)  # the frame row behind each cell (event id)
    value[at, col] = frame["v"].to_numpy()
    count[at, col] = frame["n"].to_numpy()
    row_of[at, col] = np.arange(frame.height)
    # carry each GPU's latest value forward to the scrape times it did not report at
    last = np.where(row_of >= 0, np.arange(shape[0])[:, None], 0)
    np.maximum.accumulate(last, axis=0, out=last)
    cols = np.arange(shape[1])
    value, count, row_of = value[last, cols], count[last, cols], row_of[last, cols]
    known = ~np.isnan(value)
    rows = np.flatnonzero(known.sum(axis=1) >= 2 * MIN_PEERS)
    if rows.size == 0:
        return None
    value, count, row_of, known = value[rows], count[rows], row_of[rows], known[rows]
    center = np.nanmedian(value, axis=1)
    spread = np.maximum(1.4826 * np.nanmedian(np.abs(value - center[:, None]), axis=1),
                        MAD_FLOOR)
    z = np.where(known, (value - center[:, None]) / spread[:, None], np.inf)
    low = np.argmin(z, axis=1)
    second = np.partition(z, 1, axis=1)[:, 1]
    pick = np.arange(rows.size)
    hit = ((count[pick, low] >= MIN_SCRAPES) & (value[pick, low] <= RATIO_WEAK)
           & (z[pick, low] <= -Z_OUTLIER) & (second > -Z_OUTLIER / 2))
    if not hit.any():
        return None
    k = int(np.argmax(hit))
    g, source = int(low[k]), int(row_of[k, low[k]])
    return ((str(gpus["node"][g]), int(gpus["gpu"][g])), int(times[rows[k]]),
            float(value[k, g]), str(frame["event_id"][source]))
