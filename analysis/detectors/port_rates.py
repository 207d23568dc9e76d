"""Port data-rate detector: a link carrying much less than its peers, with no error counter.

A port at half its bandwidth (a link trained down to a lower width or speed, a NIC in a
degraded mode) counts no errors; it moves fewer bytes. Its peers are the other node-facing
ports of the same node (one per rail, rail i on leaf i): the same job's collectives spread
over every rail alike, so at each scrape they carry about the same ``xmit_data`` / ``rcv_data``
rate, whatever the job's phase. A port whose rate stays well below the median of its node's
other ports (``PORT_RATE_RATIO``), in either direction, while they carry traffic, for
``PERSIST_SCRAPES`` smoothed scrapes in a row -> ``port_slow`` (the link, facing that NIC).
A node whose rails are all slow lags against none of them: ``rail_rates`` compares each rail
with the same rail of the job's other nodes for that.

Same two-pass plan as the GPU detectors: ``BUCKET_S`` buckets of every port pick the few nodes
where one port lags, then the scrape-level rule runs on those nodes' ports, around the buckets
that picked them (``scans.flagged_windows``).
"""

from __future__ import annotations

from typing import Final

import numpy as np
import polars as pl

from fleetlog.analysis.context import US, AnalysisContext, Finding
from fleetlog.analysis.detectors.scans import (
    PORT_BUCKET_S,
    flagged_windows,
    keyed_series,
    port_buckets,
)
from fleetlog.analysis.detectors.series import runs
from fleetlog.ingest import contract as c

# First pass over every port: ten-minute buckets (scans.PORT_BUCKET_S; the cost is the grouped
# scan, fewer groups is faster); a port at half rate for a third of a bucket already sits below
# the candidate ratio.
BUCKET_S: Final = PORT_BUCKET_S
MIN_PEERS: Final = 3  # node-facing ports of the node carrying traffic at that moment
# Healthy rails of one node agree within ~8 % per scrape (a few % once smoothed); a link at
# 3/4 of its peers' rate is well outside that, and one at half is a lost lane or speed step.
PORT_RATE_RATIO: Final = 0.75
CANDIDATE_MARGIN: Final = 0.1  # first pass: below 0.85 of the node's median in a bucket
SMOOTH_SCRAPES: Final = 6
PERSIST_SCRAPES: Final = 6
# The node's ports must carry at least this share of the fleet's typical busy rate: an idle
# node's few bytes say nothing about its links.
MIN_TRAFFIC_SHARE: Final = 0.05


def node_ports(ctx: AnalysisContext) -> pl.DataFrame:
    """(switch, port, node, peer, rail): every node-facing port, the NIC it faces and that
    NIC's index (its rail: rail i of every node goes to leaf i of its scalable unit)."""
    rows = []
    for (sw, port), peer in ctx.projections.topology.links.items():
        if not peer.startswith("nic:"):
            continue
        node, _, index = peer[4:].partition("/")
        rows.append((sw, port, node, peer, int(index) if index.isdigit() else None))
    return pl.DataFrame(rows, schema={"switch": pl.String, "port": pl.Int64, "node": pl.String,
                                      "peer": pl.String, "rail": pl.Int64}, orient="row")


def scrape_increases(series: pl.DataFrame) -> pl.DataFrame:
    """``series`` (``keyed_series`` of ports with stretches: ``switch``, ``port``, ``w``, ``x``,
    ``r`` in time order) with ``dx``/``dr``, each scrape's increase of the data counters; a
    counter reset or the first scrape of a stretch is no rate (null)."""
    return series.with_columns(
        pl.col("x").diff().over("switch", "port", "w").alias("dx"),
        pl.col("r").diff().over("switch", "port", "w").alias("dr"),
    ).with_columns(
        pl.when(pl.col("dx") >= 0).then(pl.col("dx")).alias("dx"),
        pl.when(pl.col("dr") >= 0).then(pl.col("dr")).alias("dr"),
    )


def detect_port_rates(ctx: AnalysisContext) -> list[Finding]:
    ports = node_ports(ctx)
    if ports.is_empty():
        return []
    # The shared grouped scan of every port (scans.port_buckets, PORT_BUCKET_S windows).
    buckets = port_buckets(ctx).select(
        "switch", pl.col("port").cast(pl.Int64), "b", "x", "r")
    if buckets.is_empty():
        return []
    marked = buckets.join(ports, on=["switch", "port"]).with_columns(
        pl.col("x").median().over("node", "b").alias("node_x"),
        pl.col("r").median().over("node", "b").alias("node_r"),
        pl.len().over("node", "b").alias("n"),
    )
    busy = marked.filter(pl.col("node_x") > 0)
    if busy.is_empty():
        return []
    typical = float(busy["node_x"].quantile(0.9) or 0.0)
    ratio = CANDIDATE_MARGIN + PORT_RATE_RATIO
    candidates = marked.filter(
        (pl.col("n") >= MIN_PEERS) & (pl.col("node_x") >= MIN_TRAFFIC_SHARE * typical)
        & ((pl.col("x") <= ratio * pl.col("node_x")) | (pl.col("r") <= ratio * pl.col("node_r")))
    )
    if candidates.is_empty():
        return []
    # Every port of those nodes, from the first bucket that made the node a candidate to the
    # last (the rule's runs bridge the scrapes where the node carries too little to compare),
    # with a bucket each side (the rate before the first scrape; a run that goes on while the
    # median catches up).
    step = BUCKET_S * US
    spans = candidates.group_by("node").agg(pl.int_ranges(pl.col("b").min(),
                                                          pl.col("b").max() + step, step)
                                            .first().alias("b")).explode("b")
    stretches = flagged_windows(ctx, spans, ["node"], BUCKET_S, step, step)
    keys = ports.join(stretches, on="node")
    data = keyed_series(ctx, "port_samples", keys.select("switch", "port", "lo", "hi"),
        "s.switch, CAST(s.port AS BIGINT) AS port, epoch_us(s.ts) AS t, "
        "s.xmit_data AS x, s.rcv_data AS r, s.event_id")
    keys = keys.select("switch", "port", "node", "peer").unique()
    per_scrape_floor = MIN_TRAFFIC_SHARE * typical * ctx.interval_us / (BUCKET_S * US)
    # Per-scrape rates (a counter reset or a gap counts as no rate), then each port's rate as a
    # share of the median of its node's ports at the same scrape.
    data = scrape_increases(data.join(keys, on=["switch", "port"])).with_columns(
        pl.col("dx").median().over("node", "t").alias("mx"),
        pl.col("dr").median().over("node", "t").alias("mr"),
        pl.col("dx").count().over("node", "t").alias("n"),
    ).with_columns(
        pl.when((pl.col("n") >= MIN_PEERS) & (pl.col("mx") >= per_scrape_floor))
        .then(pl.min_horizontal(pl.col("dx") / pl.col("mx"), pl.col("dr") / pl.col("mr")))
        .alias("ratio")
    )
    # Runs over the scrapes that compare, in a row: a pause in the node's traffic longer than
    # the smoothing (nothing to compare) ends one; a run bridging 39 minutes of a node that had
    # stopped sending was a "slow" link 39 minutes after the last scrape that showed it.
    series = ["switch", "port", "w"]
    valid = data.filter(pl.col("ratio").is_not_null()).with_columns(
        (pl.col("t").diff().over(series) > SMOOTH_SCRAPES * ctx.interval_us).fill_null(False)
        .cum_sum().over(series).alias("run"))
    findings: list[Finding] = []
    for (switch, port, _w, _run), part in valid.group_by([*series, "run"],
                                                         maintain_order=True):
        if part.height < PERSIST_SCRAPES:
            continue
        smooth = part["ratio"].rolling_median(SMOOTH_SCRAPES, min_samples=PERSIST_SCRAPES)
        values = np.nan_to_num(smooth.to_numpy().astype(np.float64), nan=1.0)
        ts = part["t"].to_numpy()
        ids = part["event_id"].to_list()
        sw, pt = str(switch), int(port)
        link = c.link_entity(sw, pt)
        peer = str(part["peer"][0])
        node = str(part["node"][0])
        for a, b in runs(values <= PORT_RATE_RATIO):
            if b - a + 1 < PERSIST_SCRAPES:
                continue
            onset = max(0, a - SMOOTH_SCRAPES // 2)
            fire = a + PERSIST_SCRAPES - 1
            findings.append(Finding(
                kind="port_slow", entity=link, onset_us=int(ts[onset]), detect_us=int(ts[fire]),
                end_us=int(ts[b]),
                text=f"{link} (facing {peer}) carries {float(values[a:b + 1].min()):.0%} of the "
                "data rate of its node's other rails, with no error counter",
                # a lower data rate is no link error (analysis/evidence.py): kept, not cited
                attrs={"switch": sw, "port": pt, "peer": peer, "node": node,
                       "rate_ratio": round(float(values[a:b + 1].min()), 3),
                       "samples": (ids[onset], ids[fire])},
            ))
    return findings
