"""GPU sample detectors over ``gpu_samples``: counters that rise, flags that set, GPUs and nodes
that stop reporting.

Scale: a 2,048-node day is ~140 M rows, so nothing here loops over samples in Python. The shared
grouped scan (``scans.gpu_summary``: per GPU, the increase of each counter, the flags seen, the
row count) picks the few GPUs and nodes worth a look; a second, filtered scan fetches only their
series, and the rules run on those arrays.

Signals and why (docs/faults.md):
- ``ecc_sbe_vol_total`` rising well above background -> HBM degrading (``sbe_rising``).
- ``ecc_dbe_vol_total`` +1 -> an uncorrectable HBM error (``dbe``).
- ``row_remap_pending`` / ``row_remap_failure`` set -> HBM rows being retired / out of spares.
- ``sram_ecc_total`` rising -> on-chip SRAM errors (``sram_rising``).
- ``nvlink_crc_flit_errors`` rising -> a failing NVLink, often before XID 74 (``nvlink_rising``);
  also a trickle over an hour (``LONG_COUNTER_RULES``): an NVLink running degraded.
- a GPU absent from its node's batches while its peers report -> fallen off the bus
  (``gpu_absent``); every GPU of a node absent -> the node stopped (``node_silent``). Absence is
  not zero: the scrape goes on for the rest of the rack. Absence counts only after a steady
  cadence was established (``MIN_CADENCE_SAMPLES`` samples at a regular interval) and then
  stopped for ``MIN_MISSED_SCRAPES`` of those intervals: a one-off snapshot (``nvidia-smi -q``)
  or files imported now and then never "fall off" anything.
- a node silent while it still shows life (kernel lines, steps of a job holding it, traffic on
  the ports facing its NICs) -> its exporter or collector is down (``telemetry_gap``), not the
  node.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import polars as pl

from fleetlog.analysis.context import US, AnalysisContext, Finding, query_pl
from fleetlog.analysis.detectors.scans import gpu_summary, keyed_series
from fleetlog.analysis.detectors.series import rising_episodes, runs
from fleetlog.ingest import contract as c

# Rising-counter rules: column -> (finding kind, window seconds, increase that fires, what it means)
COUNTER_RULES: Final = {
    "ecc_sbe_vol_total": ("sbe_rising", 600, 4.0, "single-bit ECC errors rising"),
    "sram_ecc_total": ("sram_rising", 600, 3.0, "SRAM ECC errors rising"),
    "nvlink_crc_flit_errors": ("nvlink_rising", 300, 20.0, "NVLink CRC flit errors rising"),
}
# The same counters as a rate over a long window, rising in several separate scrapes: a trickle
# (an NVLink losing a few flits an hour, running degraded) that the short window never sees,
# while one isolated jump (a blip) never fires.
LONG_COUNTER_RULES: Final = {"nvlink_crc_flit_errors": (3600, 5.0)}
LONG_MIN_RISES: Final = 3
FLAG_RULES: Final = {
    "ecc_dbe_vol_total": ("dbe", "double-bit (uncorrectable) ECC error"),
    "row_remap_pending": ("row_remap_pending", "row remapping pending"),
    "row_remap_failure": ("row_remap_failure", "row remapping failed"),
}
MIN_MISSED_SCRAPES: Final = 2  # consecutive scrapes without a GPU/node before it counts
MIN_CADENCE_SAMPLES: Final = 5  # samples at a regular interval before a silence means anything
CADENCE_TOLERANCE: Final = 0.5  # each of those intervals within ±50 % of their median
# Life signs count from this long after the last sample: a dying node's job can still report a
# step or two, and its ports carry the last bytes in flight.
LIFE_MARGIN_US: Final = 120 * US
# Traffic on its ports is looked for in the first minutes of the silence (a collector down
# leaves the node's traffic going; reading hours of every port sample for it cost seconds).
LIFE_TRAFFIC_US: Final = 900 * US
# The silent span, as a predicate on ts itself (not epoch_us(ts)): the zone maps can skip the
# rest of the day.
_SPAN: Final = "ts > make_timestamptz($start) AND ts <= make_timestamptz($end)"


def scrape_times(ctx: AnalysisContext) -> np.ndarray:
    """Every scrape time in the read window (sorted, microseconds)."""
    def build() -> np.ndarray:
        frame = query_pl(
            ctx.con,
            f"SELECT epoch_us(ts) AS t FROM (SELECT ts FROM gpu_samples WHERE {ctx.ts_filter()} "
            "GROUP BY ts) ORDER BY 1",
        )
        times: np.ndarray = frame["t"].to_numpy().astype(np.int64)
        return times
    return ctx.shared("scrapes", build)


def _series(ctx: AnalysisContext, keys: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    """Full series of the GPUs in ``keys`` (node, gpu), one filtered scan, ordered by GPU and
    time (``scans.keyed_series``: sorted by polars, not by DuckDB)."""
    cols = ", ".join(f"s.{col}" for col in columns)
    return keyed_series(ctx, "gpu_samples", keys.select("node", "gpu"),
                        f"s.node, s.gpu, epoch_us(s.ts) AS t, {cols}, s.event_id")


def detect_gpu_counters(ctx: AnalysisContext) -> list[Finding]:
    summary = gpu_summary(ctx)
    cond = pl.lit(False)
    for column, (_kind, _w, threshold, _t) in COUNTER_RULES.items():
        short = {"ecc_sbe_vol_total": "sbe", "sram_ecc_total": "sram",
                 "nvlink_crc_flit_errors": "nvl"}[column]
        long_rule = LONG_COUNTER_RULES.get(column)
        cond = cond | (pl.col(short).fill_null(0) >= (long_rule[1] if long_rule else threshold))
    cond = cond | (pl.col("dbe").fill_null(0) > 0) | (pl.col("rrp").fill_null(0) >= 1)
    cond = cond | (pl.col("rrf").fill_null(0) >= 1)
    candidates = summary.filter(cond)
    if candidates.is_empty():
        return []
    columns = [*COUNTER_RULES, *FLAG_RULES]
    data = _series(ctx, candidates, columns)
    findings: list[Finding] = []
    for (node, gpu), part in data.group_by(["node", "gpu"], maintain_order=True):
        ts = part["t"].to_numpy()
        ids = part["event_id"].to_list()
        entity = c.gpu_entity(str(node), int(gpu))
        for column, (kind, window_s, threshold, what) in COUNTER_RULES.items():
            values = part[column].to_numpy()
            rules = [(window_s, threshold, 1)]
            if column in LONG_COUNTER_RULES:
                rules.append((*LONG_COUNTER_RULES[column], LONG_MIN_RISES))
            episodes = sorted(((ep, w, th) for w, th, rises in rules
                               for ep in rising_episodes(ts, values, int(w * US), th,
                                                         min_rises=rises)),
                              key=lambda e: (e[0].detect_us, e[0].onset_us))
            seen_until = -1
            for ep, w, th in episodes:
                if ep.onset_us <= seen_until:
                    continue  # the other window's view of the same rise
                seen_until = ep.end_us
                findings.append(Finding(
                    kind=kind, entity=entity, onset_us=ep.onset_us, detect_us=ep.detect_us,
                    end_us=ep.end_us,
                    text=f"{what} on {entity}: +{ep.total:.0f} "
                    f"(fired at +{th:.0f} within {w // 60} min)",
                    evidence=(ids[ep.onset_index], ids[ep.detect_index]),
                    attrs={"increase": ep.total, "node": node},
                ))
        for column, (kind, what) in FLAG_RULES.items():
            values = np.nan_to_num(part[column].to_numpy().astype(np.float64), nan=0.0)
            if column == "ecc_dbe_vol_total":
                values = np.diff(values, prepend=values[:1])
            for first, last in runs(values > 0):
                if column != "ecc_dbe_vol_total" and first == 0:
                    continue  # already set when the window opened: not new
                findings.append(Finding(
                    kind=kind, entity=entity, onset_us=int(ts[first]), detect_us=int(ts[first]),
                    end_us=int(ts[last]), text=f"{what} on {entity}",
                    evidence=(ids[first],), attrs={"node": node},
                ))
    return findings


def detect_presence(ctx: AnalysisContext) -> list[Finding]:
    """GPUs and nodes that stop reporting while the scrape goes on."""
    scrapes = scrape_times(ctx)
    if scrapes.size < MIN_MISSED_SCRAPES + 1:
        return []
    summary = gpu_summary(ctx)
    first = summary["first_us"].to_numpy()
    # Expected rows per GPU: scrapes from its first sample to the last scrape of the window.
    expected = scrapes.size - np.searchsorted(scrapes, first, side="left")
    short = summary.with_columns(pl.Series("expected", expected)).filter(
        pl.col("n") < pl.col("expected")
    )
    if short.is_empty():
        return []
    nodes = short["node"].unique().to_list()
    ctx.con.register("_fleetlog_nodes", pl.DataFrame({"node": nodes}).to_arrow())
    try:
        data = query_pl(ctx.con,
            "SELECT s.node, epoch_us(s.ts) AS t, "
            "bit_or(CAST(1 AS UBIGINT) << CAST(s.gpu AS UBIGINT)) AS mask, "
            "max(s.event_id) AS event_id FROM gpu_samples s "
            "SEMI JOIN _fleetlog_nodes k ON s.node = k.node "
            f"WHERE {ctx.ts_filter('s.ts')} GROUP BY s.node, s.ts ORDER BY s.node, t"
        )
    finally:
        ctx.con.unregister("_fleetlog_nodes")
    findings: list[Finding] = []
    for (node,), part in data.group_by(["node"], maintain_order=True):
        findings.extend(_node_presence(str(node), part, scrapes))
    return [_telemetry_gap(ctx, f) if f.kind == "node_silent" else f for f in findings]


def steady_cadence_us(times: np.ndarray) -> int | None:
    """The regular interval of the last ``MIN_CADENCE_SAMPLES`` sample times (sorted, µs), or
    None when there are fewer or their intervals are not regular: no cadence, so no silence."""
    if times.size < MIN_CADENCE_SAMPLES:
        return None
    gaps = np.diff(times[-MIN_CADENCE_SAMPLES:]).astype(np.float64)
    median = float(np.median(gaps))
    if median <= 0 or np.any(np.abs(gaps - median) > CADENCE_TOLERANCE * median):
        return None
    return int(median)


def _silent_long_enough(seen: np.ndarray, last_missed_us: int) -> bool:
    """A steady cadence up to the last sample, then ``MIN_MISSED_SCRAPES`` of its intervals
    with none (the global scrape grid may be denser than this node's own cadence)."""
    cadence = steady_cadence_us(seen)
    return cadence is not None and (
        last_missed_us - int(seen[-1]) >= (MIN_MISSED_SCRAPES - CADENCE_TOLERANCE) * cadence)


def _telemetry_gap(ctx: AnalysisContext, f: Finding) -> Finding:
    """``node_silent`` becomes ``telemetry_gap`` when the node shows life while silent."""
    node = str(f.attrs["node"])
    start, end = int(f.attrs.get("last_seen_us", f.onset_us)) + LIFE_MARGIN_US, f.end_us
    if end <= start:
        return f
    window = {"node": node, "start": start, "end": end}
    signs: list[str] = []
    row = ctx.con.execute(
        "SELECT count(*), min(event_id) FROM xid_events WHERE node = $node "
        f"AND {_SPAN}", window).fetchall()[0]
    if row and row[0]:
        signs.append(f"{row[0]} kernel XID lines")
    jobs = ctx.projections.jobs
    held = {p.job for p in jobs.placements if node in p.nodes and p.start_us <= start
            and (p.end_us is None or p.end_us >= end)}
    if held:
        row = ctx.con.execute(
            "SELECT count(*) FROM job_events WHERE type = 'job.step_reported' "
            f"AND list_contains($jobs, job) AND {_SPAN}",
            {"start": start, "end": end, "jobs": sorted(held)}).fetchall()[0]
        if row and row[0]:
            signs.append(f"{row[0]} step reports of job(s) holding it")
    ports = [(sw, port) for (sw, port), peer in ctx.projections.topology.links.items()
             if peer.startswith(f"nic:{node}/")]
    if ports:
        # Literals, not parameters: with a list parameter DuckDB read every row group (0.36 s
        # a node on a 2,048-node day, against 0.02 s).
        which = " OR ".join(
            f"(switch = '{sw.replace(chr(39), chr(39) * 2)}' AND port = {int(port)})"
            for sw, port in ports)
        row = ctx.con.execute(
            "SELECT count(*) FROM (SELECT switch, port FROM port_samples "
            f"WHERE ({which}) AND ts > make_timestamptz({start}) "
            f"AND ts <= make_timestamptz({min(end, start + LIFE_TRAFFIC_US)}) "
            "GROUP BY switch, port "
            "HAVING max(rcv_data) > min(rcv_data) OR max(xmit_data) > min(xmit_data))"
        ).fetchall()[0]
        if row and row[0]:
            signs.append(f"traffic on {row[0]} of the ports facing its NICs")
    if not signs:
        return f
    return Finding(
        kind="telemetry_gap", entity=f.entity, onset_us=f.onset_us, detect_us=f.detect_us,
        end_us=f.end_us,
        text=f"node {node}'s GPU samples stopped while the node shows life ({'; '.join(signs)}): "
        "its exporter or collector is down",
        evidence=f.evidence, attrs={**f.attrs, "life": signs},
    )


def _node_presence(node: str, part: pl.DataFrame, scrapes: np.ndarray) -> list[Finding]:
    t = part["t"].to_numpy()
    masks = part["mask"].to_numpy().astype(np.uint64)
    ids = part["event_id"].to_list()
    start = int(np.searchsorted(scrapes, t[0], side="left"))
    grid = scrapes[start:]
    pos = np.searchsorted(grid, t)
    present = np.zeros(grid.size, dtype=bool)
    present[pos] = True
    grid_mask = np.zeros(grid.size, dtype=np.uint64)
    grid_mask[pos] = masks
    last_seen_id = [""] * grid.size
    for p, event_id in zip(pos, ids, strict=True):
        last_seen_id[p] = event_id
    findings: list[Finding] = []
    entity = c.node_entity(node)
    for a, b in runs(~present):
        if b - a + 1 < MIN_MISSED_SCRAPES or a == 0:
            continue
        if not _silent_long_enough(grid[:a][present[:a]], int(grid[b])):
            continue
        seen = last_seen_id[a - 1]
        findings.append(Finding(
            kind="node_silent", entity=entity, onset_us=int(grid[a]),
            detect_us=int(grid[a + MIN_MISSED_SCRAPES - 1]), end_us=int(grid[b]),
            text=f"node {node} stopped reporting GPU samples ({b - a + 1} scrapes missed"
            + (", until the end of the data)" if b == grid.size - 1 else ")"),
            evidence=(seen,) if seen else (), attrs={"node": node, "missed": b - a + 1,
                                                     "ongoing": b == grid.size - 1,
                                                     "last_seen_us": int(grid[a - 1])},
        ))
    full = np.bitwise_or.reduce(masks) if masks.size else np.uint64(0)
    for gpu in range(64):
        bit = np.uint64(1) << np.uint64(gpu)
        if not full & bit:
            continue
        has = (grid_mask & bit) != 0
        for a, b in runs(present & ~has):
            if b - a + 1 < MIN_MISSED_SCRAPES or a == 0:
                continue
            if not _silent_long_enough(grid[:a][has[:a]], int(grid[b])):
                continue
            seen = last_seen_id[a - 1]
            gpu_name = c.gpu_entity(node, gpu)
            findings.append(Finding(
                kind="gpu_absent", entity=gpu_name, onset_us=int(grid[a]),
                detect_us=int(grid[a + MIN_MISSED_SCRAPES - 1]), end_us=int(grid[b]),
                text=f"{gpu_name} is absent from its node's samples while its peers report "
                f"({b - a + 1} scrapes)",
                evidence=(seen, last_seen_id[a + MIN_MISSED_SCRAPES - 1]),
                attrs={"node": node},
            ))
    return findings
