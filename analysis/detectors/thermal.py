"""Thermal detectors: a GPU hotter than its peers, thermal throttling, a rack warming together.

Healthy temperatures depend on the job phase (compute, communication, checkpoint, idle), so a
fixed threshold misfires; the peers of a GPU are the other GPUs of its node (same job, same
phase, same cooling) and, for a whole node, the nodes of other racks at the same moment.

Signals and why (docs/faults.md):
- ``gpu_temp_c`` minus the median of its peers at the same scrape (the node's other GPUs that
  are not themselves abnormal: robust median/MAD), less that GPU's usual offset (its median over
  the previous hour, never below zero: only the hot side counts), ``HOT_DELTA_C`` or more for
  ``HOT_SAMPLES`` scrapes -> a failing thermal interface (``gpu_hot``).
- ``throttle_reasons`` with 0x20 (SW thermal) or 0x40 (HW thermal) -> the GPU is throttling on
  heat; clocks drop and the job straggles (``thermal_throttle``).
Several nodes of one rack hot or throttling together are a cooling failure (the diagnosis
decides).
"""

from __future__ import annotations

from typing import Final

import numpy as np
import polars as pl

from fleetlog.analysis.context import AnalysisContext, Finding
from fleetlog.analysis.detectors.scans import THERMAL_BITS, gpu_summary, keyed_series
from fleetlog.analysis.detectors.series import runs
from fleetlog.ingest import contract as c

HOT_DELTA_C: Final = 5.0  # above the GPU's own usual offset from its node's median
RAMP_DELTA_C: Final = 2.0
BASELINE_SAMPLES: Final = 360
OFFSET_C: Final = 4.0  # a GPU's fixed offset can be this much: assumed before a baseline exists
HOT_SAMPLES: Final = 3
PEER_MADS: Final = 3.0  # a peer this many scaled MADs from the node's median is abnormal
MAD_SCALE: Final = 1.4826  # MAD -> standard deviation of a normal distribution


def detect_thermal(ctx: AnalysisContext) -> list[Finding]:
    summary = gpu_summary(ctx)
    node_max = summary.group_by("node").agg(pl.col("tmax").median().alias("node_tmax"))
    flagged = summary.join(node_max, on="node").filter(
        ((pl.col("throttle") & THERMAL_BITS) != 0)
        | (pl.col("tmax") - pl.col("node_tmax") >= HOT_DELTA_C + 2)
    )
    if flagged.is_empty():
        return []
    data = keyed_series(ctx, "gpu_samples", flagged.select("node").unique(),
        "s.node, s.gpu, epoch_us(s.ts) AS t, s.gpu_temp_c AS temp, "
        "CAST(coalesce(s.throttle_reasons, 0) AS UBIGINT) AS throttle, s.sm_clock_mhz, "
        "s.event_id", then_by=["gpu"])
    # dev: above its peers, the node's GPUs at the same scrape that are not themselves abnormal
    # (robust: further than PEER_MADS scaled MADs, at least HOT_DELTA_C, from the node's median
    # are left out, so a really hot GPU does not make its siblings look hot or cold); excess:
    # above this GPU's own usual dev over the previous hour (each GPU has a fixed offset of a
    # few °C), an offset below zero counting as zero: only the hot side is hot, a GPU that
    # usually runs cooler than its peers is not hot when it catches up with them.
    median = pl.col("temp").median().over("node", "t")
    spread = (pl.col("temp") - median).abs().median().over("node", "t") * MAD_SCALE
    data = data.with_columns(
        pl.when((pl.col("temp") - median).abs()
                <= pl.max_horizontal(PEER_MADS * spread, pl.lit(HOT_DELTA_C)))
        .then(pl.col("temp")).alias("peer_temp")
    ).with_columns(
        (pl.col("temp") - pl.col("peer_temp").median().over("node", "t")).alias("dev")
    ).with_columns(
        (pl.col("dev") - pl.col("dev").shift(1).rolling_median(BASELINE_SAMPLES, min_samples=30)
         .over("node", "gpu").fill_null(OFFSET_C).clip(lower_bound=0.0)).alias("excess")
    )
    findings: list[Finding] = []
    for (node, gpu), part in data.group_by(["node", "gpu"], maintain_order=True):
        entity = c.gpu_entity(str(node), int(gpu))
        ts = part["t"].to_numpy()
        ids = part["event_id"].to_list()
        dev = np.nan_to_num(part["excess"].to_numpy().astype(np.float64), nan=0.0)
        above = np.nan_to_num(part["dev"].to_numpy().astype(np.float64), nan=0.0)
        temp = part["temp"].to_numpy()
        for a, b in runs(dev >= HOT_DELTA_C):
            if b - a + 1 < HOT_SAMPLES:
                continue
            onset = a
            while onset > 0 and dev[onset - 1] >= RAMP_DELTA_C:
                onset -= 1
            fire = a + HOT_SAMPLES - 1
            findings.append(Finding(
                kind="gpu_hot", entity=entity, onset_us=int(ts[onset]), detect_us=int(ts[fire]),
                end_us=int(ts[b]),
                text=f"{entity} runs {above[a:b + 1].max():.0f} °C above the other GPUs of its "
                f"node ({dev[a:b + 1].max():.0f} °C above its usual offset; up to "
                f"{np.nanmax(temp[a:b + 1]):.0f} °C)",
                evidence=(ids[onset], ids[fire]), attrs={"node": node},
            ))
        throttled = (part["throttle"].to_numpy().astype(np.uint64) & np.uint64(THERMAL_BITS)) != 0
        for a, b in runs(throttled):
            if b - a + 1 < 2:
                continue
            clock = part["sm_clock_mhz"].to_numpy()
            findings.append(Finding(
                kind="thermal_throttle", entity=entity, onset_us=int(ts[a]),
                detect_us=int(ts[a + 1]), end_us=int(ts[b]),
                text=f"{entity} is thermally throttled (SM clock down to "
                f"{np.nanmin(clock[a:b + 1]):.0f} MHz)",
                evidence=(ids[a],), attrs={"node": node},
            ))
    return findings
