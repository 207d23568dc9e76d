"""Port data-rate detector: a link carrying much less than its peers, with no error counter.

A port at half its bandwidth (a link trained down to a lower width or speed, a NIC in a
degraded mode) counts no errors; it moves fewer bytes. It has two kinds of peers, and both
carry about the same ``xmit_data`` / ``rcv_data`` rate at each scrape, whatever the job's phase:

- the other node-facing ports of the same node (one per rail, rail i on leaf i): the job's
  collectives spread over every rail alike;
- the other ports of the same rail, the same leaf's ports facing the other nodes of the same
  job: rail-optimized collectives move the same bytes between every pair of ranks on a rail.
  This tells what the node's rails cannot: a node whose rails are too few, or several of them
  degraded at once (a shared PCIe switch), so that their median is itself low.

A port whose rate stays well below the median of its peers (``PORT_RATE_RATIO``), in either
direction, while they carry traffic, for ``PERSIST_SCRAPES`` smoothed scrapes -> ``port_slow``
(the link, facing that NIC). A stretch the node's rails told is not told again by the rail; and
the rail tells only while another port of the same node carries what its own rail peers carry:
a node none of whose ports does moves less as a whole (slow, idle, out of step), which is the
node's matter, not its links'.

Same two-pass plan as the GPU detectors: ``BUCKET_S`` buckets of every port pick the few nodes
(and rails) where one port lags, then the scrape-level rule runs on those ports' series.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import polars as pl

from fleetlog.analysis.context import US, AnalysisContext, Finding
from fleetlog.analysis.detectors.peers import job_of_node
from fleetlog.analysis.detectors.scans import PORT_BUCKET_S, keyed_series, port_buckets
from fleetlog.analysis.detectors.series import runs
from fleetlog.ingest import contract as c

# First pass over every port: ten-minute buckets (scans.PORT_BUCKET_S; the cost is the grouped
# scan, fewer groups is faster); a port at half rate for a third of a bucket already sits below
# the candidate ratio.
BUCKET_S: Final = PORT_BUCKET_S
MIN_PEERS: Final = 3  # peer ports carrying traffic at that moment
# Healthy rails of one node agree within ~8 % per scrape (a few % once smoothed); a link at
# 3/4 of its peers' rate is well outside that, and one at half is a lost lane or speed step.
PORT_RATE_RATIO: Final = 0.75
CANDIDATE_MARGIN: Final = 0.1  # first pass: below 0.85 of the peers' median in a bucket
SMOOTH_SCRAPES: Final = 6
PERSIST_SCRAPES: Final = 6
# The node's ports must carry at least this share of the fleet's typical busy rate: an idle
# node's few bytes say nothing about its links.
MIN_TRAFFIC_SHARE: Final = 0.05


def _node_ports(ctx: AnalysisContext) -> pl.DataFrame:
    rows = [(sw, port, peer[4:].split("/", 1)[0], peer)
            for (sw, port), peer in ctx.projections.topology.links.items()
            if peer.startswith("nic:")]
    return pl.DataFrame(rows, schema={"switch": pl.String, "port": pl.Int64, "node": pl.String,
                                      "peer": pl.String}, orient="row")


def _with_jobs(frame: pl.DataFrame, jobs: pl.DataFrame, at: str) -> pl.DataFrame:
    """``frame`` with the job its node held at ``at`` (rows of nodes in no job dropped)."""
    if jobs.is_empty():
        return frame.with_columns(pl.lit(None, pl.String).alias("job")).clear()
    return (frame.join(jobs, on="node")
            .filter((pl.col("start_us") <= pl.col(at)) & (pl.col(at) < pl.col("end_us")))
            .drop("start_us", "end_us")
            .unique([*frame.columns], keep="last", maintain_order=True))


def detect_port_rates(ctx: AnalysisContext) -> list[Finding]:
    ports = _node_ports(ctx)
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
    per_scrape_floor = MIN_TRAFFIC_SHARE * typical * ctx.interval_us / (BUCKET_S * US)
    nodes = candidates["node"].unique().to_list()
    findings = (_slow_ports(_rates(ctx, ports.filter(pl.col("node").is_in(nodes))), ["node", "t"],
                            per_scrape_floor, "its node's other rails") if nodes else [])
    jobs = job_of_node(ctx)
    rails = _with_jobs(marked.filter(pl.col("x") > 0), jobs, "b").with_columns(
        pl.col("x").median().over("switch", "job", "b").alias("rail_x"),
        pl.col("r").median().over("switch", "job", "b").alias("rail_r"),
        pl.len().over("switch", "job", "b").alias("rail_n"),
    ).filter((pl.col("rail_n") > MIN_PEERS) & (pl.col("rail_x") >= MIN_TRAFFIC_SHARE * typical))
    rails = rails.with_columns(pl.min_horizontal(pl.col("x") / pl.col("rail_x"),
                                                 pl.col("r") / pl.col("rail_r")).alias("share"))
    # Per node and bucket, its best port's share of its rail: a node whose best port is low
    # moves less as a whole.
    best = rails.group_by("node", "b").agg(pl.col("share").max().alias("best"))
    switches = rails.filter(pl.col("share") <= ratio)["switch"].unique().to_list()
    if switches:
        data = _with_jobs(_rates(ctx, ports.filter(pl.col("switch").is_in(switches))), jobs, "t")
        told: dict[str, list[tuple[int, int]]] = {}
        for f in findings:
            told.setdefault(f.entity, []).append((f.onset_us, f.end_us))
        by_rail = [f for f in _slow_ports(data, ["switch", "job", "t"], per_scrape_floor,
                                          "the same rail's ports facing its job's other nodes")
                   if not any(a <= f.end_us and f.onset_us <= b
                              for a, b in told.get(f.entity, []))]
        findings.extend(_node_carries(by_rail, best))
    return findings


def _rates(ctx: AnalysisContext, keys: pl.DataFrame) -> pl.DataFrame:
    """Per-scrape data rates of the ports ``keys`` (a counter reset or a gap: no rate)."""
    data = keyed_series(ctx, "port_samples", keys.select("switch", "port"),
        "s.switch, CAST(s.port AS BIGINT) AS port, epoch_us(s.ts) AS t, "
        "s.xmit_data AS x, s.rcv_data AS r, s.event_id")
    return data.join(keys, on=["switch", "port"]).with_columns(
        (pl.col("x").diff().over("switch", "port")).alias("dx"),
        (pl.col("r").diff().over("switch", "port")).alias("dr"),
    ).with_columns(
        pl.when(pl.col("dx") >= 0).then(pl.col("dx")).alias("dx"),
        pl.when(pl.col("dr") >= 0).then(pl.col("dr")).alias("dr"),
    )


def _slow_ports(data: pl.DataFrame, peers: list[str], floor: float,
                against: str) -> list[Finding]:
    """Each port's rate as a share of the median of its peers (the rows sharing ``peers``) at
    the same scrape, smoothed; a stretch below ``PORT_RATE_RATIO`` -> ``port_slow``."""
    if data.is_empty():
        return []
    data = data.with_columns(
        pl.col("dx").median().over(peers).alias("mx"),
        pl.col("dr").median().over(peers).alias("mr"),
        pl.col("dx").count().over(peers).alias("n"),
    ).with_columns(
        pl.when((pl.col("n") >= MIN_PEERS) & (pl.col("mx") >= floor))
        .then(pl.min_horizontal(pl.col("dx") / pl.col("mx"), pl.col("dr") / pl.col("mr")))
        .alias("ratio")
    ).sort("switch", "port", "t")
    findings: list[Finding] = []
    for (switch, port), part in data.group_by(["switch", "port"], maintain_order=True):
        part = part.filter(pl.col("ratio").is_not_null())
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
                f"data rate of {against}, with no error counter",
                # a lower data rate is no link error (analysis/evidence.py): kept, not cited
                attrs={"switch": sw, "port": pt, "peer": peer, "node": node,
                       "rate_ratio": round(float(values[a:b + 1].min()), 3),
                       "against": "node" if peers[0] == "node" else "rail",
                       "samples": (ids[onset], ids[fire])},
            ))
    return findings


def _node_carries(found: list[Finding], best: pl.DataFrame) -> list[Finding]:
    """The rail findings of nodes that, over the stretch, had a port carrying what its rail
    peers carry (its best port's share of its rail, median over the stretch's buckets, at
    least the candidate ratio): the others are nodes that move less as a whole."""
    step = BUCKET_S * US
    out = []
    for f in found:
        shares = best.filter((pl.col("node") == f.attrs["node"])
                             & (pl.col("b") >= f.onset_us - f.onset_us % step)
                             & (pl.col("b") <= f.end_us))["best"].to_numpy()
        if shares.size and float(np.median(shares)) > PORT_RATE_RATIO + CANDIDATE_MARGIN:
            out.append(f)
    return out
