"""Same-rail data-rate detector: a node whose NIC ports all carry less than the same rails of
its job's other nodes, with no error counter.

``port_rates`` compares a port with its node's other rails. A node whose rails all carry less at
once (its PCIe switch or root port trained down, a NIC firmware mode: every rail alike) lags
against nothing there. Its peers are the same rail of the other nodes of its job: the
collectives of a data-parallel job load rail i of every node alike, whatever the phase, while
the ports of other jobs, doing other work, say nothing about it. A node at least half of whose
rails (``NODE_RAIL_SHARE``) stay at or below ``PORT_RATE_RATIO`` of their rail's median at the
same scrape, in either direction, for ``PERSIST_SCRAPES`` smoothed scrapes in a row, is one
finding for the node (``node_ports_slow``; diagnosis makes it ``host_hw`` on the node, the
slowest NIC second), not one per port. A lone port slow against its rail is slow against its
node's other rails too: that is ``port_rates``' ``port_slow``, not repeated here. A whole rail
slow across the job's nodes (a leaf switch) keeps the rail's median low, so nothing here; each
node's port on it is ``port_rates``' as before.

Scale: the first pass is the shared bucket frame (``scans.port_buckets``, ``BUCKET_S``): ports
joined to their node and rail and, as of each bucket, to the job holding the node; per (job,
rail, bucket) the median over the job's nodes. A node with at least half its rails below
``PORT_RATE_RATIO + CANDIDATE_MARGIN`` of their rail's median, in a job with ``MIN_RAIL_NODES``
nodes carrying traffic on the rail, is a candidate. The second pass reads at scrape level,
around the candidates' buckets only (``scans.flagged_windows``), the candidate's ports and those
of at most ``PEER_SAMPLE`` other nodes of its job (``peer_sample``: evenly spaced in name order,
nodes that were no candidate first), so its memory is bounded whatever the job's size: a
scrape-level pass over every port of a 2,048-node day ran out of memory.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Final

import numpy as np
import polars as pl

from fleetlog.analysis.context import US, AnalysisContext, Finding
from fleetlog.analysis.detectors.port_rates import (
    CANDIDATE_MARGIN,
    MIN_TRAFFIC_SHARE,
    PERSIST_SCRAPES,
    PORT_RATE_RATIO,
    SMOOTH_SCRAPES,
    node_ports,
    scrape_increases,
)
from fleetlog.analysis.detectors.scans import (
    PORT_BUCKET_S,
    flagged_windows,
    job_of_node,
    keyed_series,
    port_buckets,
)
from fleetlog.analysis.detectors.series import runs
from fleetlog.ingest import contract as c

BUCKET_S: Final = PORT_BUCKET_S
# Nodes of the job carrying traffic on the rail in the bucket, the node included: with fewer,
# a median is one or two nodes' word (a job of three nodes compares nothing).
MIN_RAIL_NODES: Final = 4
# Other nodes of the job read at scrape level per candidate: the median of eight healthy
# peers' rates is as steady as the job's (healthy rails agree within ~8 % per scrape), and the
# read stays ~9 nodes' ports whatever the job's size.
PEER_SAMPLE: Final = 8
MIN_PEERS: Final = 3  # sampled peers carrying traffic at the scrape, else it compares nothing
NODE_RAIL_SHARE: Final = 0.5  # of the node's rails slow at once: the node's, not one link's


def detect_rail_rates(ctx: AnalysisContext) -> list[Finding]:
    return rail_findings(ctx, PEER_SAMPLE)


def rail_findings(ctx: AnalysisContext, peer_sample: int) -> list[Finding]:
    """``node_ports_slow`` findings, each candidate compared with at most ``peer_sample`` other
    nodes of its job (``detect_rail_rates``: ``PEER_SAMPLE``)."""
    ports = node_ports(ctx).filter(pl.col("rail").is_not_null())
    jobs = job_of_node(ctx)
    if ports.is_empty() or jobs.is_empty():
        return []
    candidates, floor = _candidates(ctx, ports, jobs)
    if candidates.is_empty():
        return []
    step = BUCKET_S * US
    # From a bucket before the first low bucket (the rate before it) to one after the last (a
    # run goes on while the smoothing catches up); stretches a bucket apart merge.
    stretches = flagged_windows(ctx, candidates, ["node", "job"], BUCKET_S, step, step)
    peers = _peers(stretches, jobs, candidates, peer_sample)
    read = pl.concat([
        stretches.select("node", "lo", "hi"),
        peers.select(pl.col("peer").alias("node"), "lo", "hi"),
    ]).unique()
    keys = ports.join(read, on="node").select("switch", "port", "lo", "hi")
    data = keyed_series(ctx, "port_samples", keys,
        "s.switch, CAST(s.port AS BIGINT) AS port, epoch_us(s.ts) AS t, "
        "s.xmit_data AS x, s.rcv_data AS r, s.event_id")
    per_scrape_floor = floor * ctx.interval_us / step
    ratios = _ratios(ctx, data, ports, stretches, peers, jobs, per_scrape_floor)
    rails = ports.group_by("node").agg(pl.len().alias("rails"))
    return _node_runs(ctx, ratios, rails)


def _candidates(ctx: AnalysisContext, ports: pl.DataFrame,
                jobs: pl.DataFrame) -> tuple[pl.DataFrame, float]:
    """(node, job, b) where at least half the node's rails sit below their rail's median over
    the job's nodes; and the traffic floor (``MIN_TRAFFIC_SHARE`` of the fleet's typical busy
    rail median per bucket)."""
    empty = pl.DataFrame(schema={"node": pl.String, "job": pl.String, "b": pl.Int64})
    frame = (port_buckets(ctx).select("switch", pl.col("port").cast(pl.Int64), "b", "x", "r")
             .join(ports.select("switch", "port", "node", "rail"), on=["switch", "port"])
             .select("node", "rail", "b", "x", "r"))
    if frame.is_empty():
        return empty, 0.0
    # The job holding the node for the whole bucket: the latest placement started by then, if
    # it had not ended by the bucket's end (an as-of join, once per node and bucket). A job's
    # last, partial bucket compares nothing: its nodes stop sending a scrape or two apart, and
    # on the 2,048-node day those tails were 50 of the 53 candidates (a second pass over each
    # for nothing).
    step = BUCKET_S * US
    held = (frame.select("node", "b").unique().sort("b")
            .join_asof(jobs.sort("start_us"), left_on="b", right_on="start_us", by="node",
                       strategy="backward", check_sortedness=False)
            .filter(pl.col("job").is_not_null() & (pl.col("b") + step <= pl.col("end_us")))
            .select("node", "b", "job"))
    frame = frame.join(held, on=["node", "b"])
    group = ["job", "rail", "b"]
    medians = frame.group_by(group).agg(pl.col("x").median().alias("rail_x"),
                                        pl.col("r").median().alias("rail_r"))
    busy = medians.filter(pl.col("rail_x") > 0)
    if busy.is_empty():
        return empty, 0.0
    floor = MIN_TRAFFIC_SHARE * float(busy["rail_x"].quantile(0.9) or 0.0)
    ratio = PORT_RATE_RATIO + CANDIDATE_MARGIN
    low = frame.join(medians.filter(pl.col("rail_x") >= floor), on=group).filter(
        (pl.col("x") <= ratio * pl.col("rail_x")) | (pl.col("r") <= ratio * pl.col("rail_r")))
    # ... in a job with enough nodes carrying traffic on that rail then
    carrying = (frame.join(low.select(group).unique(), on=group, how="semi")
                .group_by(group).agg((pl.col("x") >= floor).sum().alias("carrying"))
                .filter(pl.col("carrying") >= MIN_RAIL_NODES))
    low = low.join(carrying, on=group, how="semi")
    rails = ports.group_by("node").agg(pl.len().alias("rails"))
    candidates = (low.group_by("node", "job", "b").agg(pl.col("rail").n_unique().alias("low"))
                  .join(rails, on="node")
                  .filter(pl.col("low") >= (pl.col("rails") * NODE_RAIL_SHARE).ceil())
                  .select("node", "job", "b").sort("node", "job", "b"))
    return candidates, floor


def peer_sample(nodes: Sequence[str], avoid: set[str], k: int) -> list[str]:
    """Up to ``k`` of ``nodes``, chosen deterministically: those not in ``avoid`` first, then
    those in it, each group evenly spaced over its name order (a sample that spans the job's
    racks and scalable units, not the first few of one)."""
    out: list[str] = []
    ordered = sorted(set(nodes))
    for group in ([n for n in ordered if n not in avoid], [n for n in ordered if n in avoid]):
        need = k - len(out)
        if need <= 0:
            break
        out += group if len(group) <= need else [group[i * len(group) // need]
                                                 for i in range(need)]
    return out


def _peers(stretches: pl.DataFrame, jobs: pl.DataFrame, candidates: pl.DataFrame,
           k: int) -> pl.DataFrame:
    """(node, job, lo, hi, peer): for each candidate's stretch, the other nodes of its job
    placed during it, at most ``k`` of them (``peer_sample``; other candidates of the job last)."""
    members: dict[str, list[tuple[str, int, int]]] = defaultdict(list)
    for node, job, start, end in jobs.iter_rows():
        members[str(job)].append((str(node), int(start), int(end)))
    suspects: dict[str, set[str]] = defaultdict(set)
    for node, job in candidates.select("node", "job").unique().iter_rows():
        suspects[str(job)].add(str(node))
    rows = []
    for node, job, lo, hi in stretches.select("node", "job", "lo", "hi").iter_rows():
        placed = [n for n, start, end in members[job] if n != node and start < hi and end > lo]
        rows += [(node, job, lo, hi, peer)
                 for peer in peer_sample(placed, suspects[job] - {node}, k)]
    return pl.DataFrame(rows, schema={"node": pl.String, "job": pl.String, "lo": pl.Int64,
                                      "hi": pl.Int64, "peer": pl.String}, orient="row")


def _in_job(frame: pl.DataFrame, jobs: pl.DataFrame, node: str) -> pl.DataFrame:
    """The rows of ``frame`` (with ``job`` and ``t``) whose ``node`` column's node was placed
    in that job at ``t``: a node that left the job (or a peer not yet in it) compares nothing."""
    placed = jobs.rename({"node": node})
    return (frame.join(placed, on=[node, "job"])
            .filter((pl.col("t") >= pl.col("start_us")) & (pl.col("t") < pl.col("end_us")))
            .drop("start_us", "end_us"))


def _ratios(ctx: AnalysisContext, data: pl.DataFrame, ports: pl.DataFrame,
            stretches: pl.DataFrame, peers: pl.DataFrame, jobs: pl.DataFrame,
            floor: float) -> pl.DataFrame:
    """Per candidate port and scrape: its rate as a share of the median of the sampled peers'
    same rail at the same scrape (``ratio``; null where too few peers carry traffic)."""
    interval = ctx.interval_us
    # Per-scrape increases (a counter reset or a gap is no rate), on a common scrape grid: the
    # ports of a job hang off several leaves, each scraped on its own.
    data = (scrape_increases(data.join(ports.select("switch", "port", "node", "rail"),
                                       on=["switch", "port"]))
            .with_columns(((pl.col("t") + interval // 2) // interval).alias("slot")))
    own = _in_job(data.join(stretches.select("node", "job", pl.col("lo").alias("w")),
                            on=["node", "w"]), jobs, "node")
    others = _in_job(
        data.select(pl.col("node").alias("peer"), "w", "rail", "slot", "t", "dx", "dr")
        .join(peers.select("node", "job", pl.col("lo").alias("w"), "peer"), on=["peer", "w"]),
        jobs, "peer")
    medians = others.group_by("node", "w", "rail", "slot").agg(
        pl.col("dx").median().alias("mx"), pl.col("dr").median().alias("mr"),
        (pl.col("dx") >= floor).sum().alias("n"))
    compare = (pl.col("n") >= MIN_PEERS) & (pl.col("mx") >= floor)
    return (own.join(medians, on=["node", "w", "rail", "slot"], how="left")
            .with_columns(pl.when(compare).then(pl.min_horizontal(
                pl.col("dx") / pl.col("mx"),
                pl.when(pl.col("mr") >= floor).then(pl.col("dr") / pl.col("mr"))))
                .alias("ratio"))
            .filter(pl.col("ratio").is_not_null())
            .sort("node", "w", "rail", "t"))


def _node_runs(ctx: AnalysisContext, ratios: pl.DataFrame,
               rails: pl.DataFrame) -> list[Finding]:
    """Each rail's ratio smoothed over its comparable scrapes (a pause in the job's traffic
    longer than the smoothing ends a series' run); a scrape where at least half the node's
    rails sit at or below ``PORT_RATE_RATIO``, ``PERSIST_SCRAPES`` of them in a row, is one
    finding for the node."""
    if ratios.is_empty():
        return []
    gap = SMOOTH_SCRAPES * ctx.interval_us
    series = ["node", "w", "rail"]
    smoothed = (ratios
                .with_columns((pl.col("t").diff().over(series) > gap).fill_null(False)
                              .cum_sum().over(series).alias("run"))
                .with_columns(pl.col("ratio").rolling_median(SMOOTH_SCRAPES,
                                                             min_samples=PERSIST_SCRAPES)
                              .over(*series, "run").alias("smooth"))
                .filter(pl.col("smooth").is_not_null()))
    per_slot = (smoothed.sort("node", "w", "slot", "rail")
                .group_by("node", "w", "slot", maintain_order=True).agg(
                    pl.col("t").min(), pl.col("job").first(), pl.col("event_id").first(),
                    (pl.col("smooth") <= PORT_RATE_RATIO).sum().alias("low"),
                    pl.col("rail"), pl.col("smooth"))
                .join(rails, on="node")
                .with_columns((pl.col("low") >= (pl.col("rails") * NODE_RAIL_SHARE).ceil())
                              .alias("slow"))
                .sort("node", "w", "slot"))
    flagged = per_slot.filter(pl.col("slow").any().over("node", "w"))
    findings: list[Finding] = []
    for (node, _w), part in flagged.group_by(["node", "w"], maintain_order=True):
        slots = part["slot"].to_numpy()
        # Consecutive scrapes only: a gap in the comparable scrapes ends a run.
        seg = np.cumsum(np.concatenate([[False], np.diff(slots) * ctx.interval_us > gap]))
        slow = part["slow"].to_numpy()
        for s in np.unique(seg):
            idx = np.flatnonzero(seg == s)
            for a, b in runs(slow[idx]):
                if b - a + 1 >= PERSIST_SCRAPES:
                    findings.append(_finding(str(node), part[int(idx[a]):int(idx[b]) + 1],
                                             part[max(int(idx[0]), int(idx[a])
                                                      - SMOOTH_SCRAPES // 2)]))
    return findings


def _finding(node: str, run: pl.DataFrame, onset: pl.DataFrame) -> Finding:
    """One ``node_ports_slow``: ``run`` its slow scrapes, ``onset`` the scrape it began at
    (half the smoothing before the first smoothed scrape below)."""
    fire = run[PERSIST_SCRAPES - 1]
    lowest: dict[int, float] = {}
    for rail_list, smooth_list in zip(run["rail"].to_list(), run["smooth"].to_list(),
                                      strict=True):
        for rail, value in zip(rail_list, smooth_list, strict=True):
            lowest[int(rail)] = min(float(value), lowest.get(int(rail), math.inf))
    slow_rails = sorted(r for r, v in lowest.items() if v <= PORT_RATE_RATIO)
    nic = c.nic_entity(node, min(lowest, key=lambda r: (lowest[r], r)))
    # the slow rails' typical share (every rail of a run is at or below it at some scrape)
    ratio = float(np.median([lowest[r] for r in slow_rails]))
    job = str(run["job"][0])
    return Finding(
        kind="node_ports_slow", entity=c.node_entity(node), onset_us=int(onset["t"][0]),
        detect_us=int(fire["t"][0]), end_us=int(run["t"][-1]),
        text=f"{len(slow_rails)} of the {len(lowest)} NIC ports of node {node} carry {ratio:.0%} "
        f"of the data rate of the same rails on job {job}'s other nodes, with "
        "no error counter: the node's path to its NICs, not one link (check the NICs' PCIe "
        "link width and speed, lspci -vv LnkSta, and their rate and mode, ibstat)",
        # a lower data rate is no link error (analysis/evidence.py): kept, not cited
        attrs={"node": node, "job": job, "nic": nic, "rails": slow_rails,
               "rate_ratio": round(ratio, 3),
               "rail_ratios": {c.nic_entity(node, r): round(v, 3)
                               for r, v in sorted(lowest.items())},
               "samples": (str(onset["event_id"][0]), str(fire["event_id"][0]))},
    )
