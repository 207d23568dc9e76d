"""The explicit detections of ``fleetlog analyze``, written directly in polars, and a check that
the two find the same things.

What a user would write without fleetlog: load the columns from the store's views into polars
(through Arrow), sort, and express each rule as column expressions over the whole fleet at once.
Rules and thresholds are fleetlog's own (imported from ``analysis.detectors``), so the sets of
detections must agree; the comparison is on (kind, entity, detection time):

- ``xid``: a hardware or fatal XID (the benign 13/31/43 excluded);
- ``dbe`` / ``row_remap_pending`` / ``row_remap_failure``: a GPU's ECC flags;
- ``sbe_rising`` / ``sram_rising`` / ``nvlink_rising``, ``port_errors`` / ``rcv_errors``: a counter
  rising by the threshold within the window (one detection per chain of increments);
- ``thermal_throttle``: thermal throttle bits set on 2 scrapes or more;
- ``node_silent`` / ``gpu_absent``: a node (every GPU) or one GPU missing from 2 scrapes or more
  while the scrape goes on;
- ``link_down``: a port's state going to Down.

Not reproduced (peer baselines, job models, diagnosis): ``gpu_hot``, the job detectors, host
lifecycle events, incidents.

    .venv/bin/python bench/polars_detect.py --db run.duckdb            # polars: timings, count
    .venv/bin/python bench/polars_detect.py --db run.duckdb --compare  # and fleetlog's, agreement
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fleetlog.analysis.detectors.gpu import COUNTER_RULES, MIN_MISSED_SCRAPES  # noqa: E402
from fleetlog.analysis.detectors.network import (  # noqa: E402
    ERROR_WINDOW_S,
    RCV_THRESHOLD,
    SYMBOL_THRESHOLD,
)
from fleetlog.analysis.detectors.scans import THERMAL_BITS  # noqa: E402
from fleetlog.analysis.detectors.xid import BENIGN_XIDS, XID_HINTS  # noqa: E402
from fleetlog.ingest import contract as c  # noqa: E402
from fleetlog.ingest.pipeline import peak_rss_mb  # noqa: E402

US = 1_000_000
KINDS = ("xid", "dbe", "row_remap_pending", "row_remap_failure", "sbe_rising", "sram_rising",
         "nvlink_rising", "thermal_throttle", "node_silent", "gpu_absent", "link_down",
         "port_errors", "rcv_errors")
Detection = tuple[str, str, int]  # kind, entity, detect_us
GPU = ["node", "gpu"]
PORT = ["switch", "port"]


def _gpu_entity() -> pl.Expr:
    return pl.format("gpu:{}/{}", pl.col("node"), pl.col("gpu"))


def _link_entity() -> pl.Expr:
    return pl.format("link:{}/{}", pl.col("switch"), pl.col("port"))


def _rows(frame: pl.DataFrame, kind: str, entity: pl.Expr) -> list[Detection]:
    out = frame.select(entity.alias("entity"), pl.col("detect_us"))
    return [(kind, e, int(t)) for e, t in out.iter_rows()]


def _starts(keys: list[str]) -> pl.Expr:
    """True on the first row of each entity (``frame`` sorted by keys, t): cheaper than
    ``over(keys)`` window expressions on millions of rows."""
    changed = pl.lit(False)
    for key in keys:
        changed = changed | (pl.col(key) != pl.col(key).shift(1))
    return changed.fill_null(True)


def rising(frame: pl.DataFrame, keys: list[str], value: pl.Expr, window_us: int,
           threshold: float) -> pl.DataFrame:
    """(keys, detect_us): the first sample of each chain of increments (gaps <= window) at which
    the increase within (t - window, t] reaches ``threshold``. ``frame`` is sorted by keys, t."""
    inc = pl.when(_starts(keys)).then(None).otherwise(value - value.shift(1))
    steps = frame.select(*keys, "t", inc.fill_nan(None).alias("inc")).filter(pl.col("inc") > 0)
    if steps.is_empty():
        return pl.DataFrame(schema={**{k: frame.schema[k] for k in keys}, "detect_us": pl.Int64})
    steps = steps.with_columns(
        pl.col("inc").rolling_sum_by("t", window_size=f"{window_us}i", closed="right")
        .over(keys).alias("windowed"),
        (_starts(keys) | (pl.col("t") - pl.col("t").shift(1) > window_us)).cum_sum()
        .alias("chain"),
    )
    return (steps.filter(pl.col("windowed") >= threshold)
            .group_by(*keys, "chain").agg(pl.col("t").min().alias("detect_us"))
            .select(*keys, "detect_us"))


def run_starts(frame: pl.DataFrame, keys: list[str], flag: pl.Expr, *, skip_first: bool,
               min_len: int = 1, detect_at: int = 0) -> pl.DataFrame:
    """(keys, detect_us) of each run of ``flag`` per entity: its ``detect_at``-th sample, for
    runs at least ``min_len`` long; ``skip_first`` drops a run already on at the first sample."""
    first = _starts(keys)
    marked = frame.select(*keys, "t", flag.alias("on"), first.alias("first")).with_columns(
        ((pl.col("on") != pl.col("on").shift(1).fill_null(False)) | pl.col("first")).cum_sum()
        .alias("run"),
    ).filter(pl.col("on"))
    runs = marked.group_by(*keys, "run").agg(
        pl.len().alias("n"), pl.col("first").first().alias("at_start"),
        pl.col("t").sort().get(min(detect_at, min_len - 1)).alias("detect_us"),
    ).filter(pl.col("n") >= min_len)
    if skip_first:
        runs = runs.filter(~pl.col("at_start"))
    return runs.select(*keys, "detect_us")


def gpu_detections(gpu: pl.DataFrame) -> list[Detection]:
    out: list[Detection] = []
    for column, (kind, window_s, threshold, _what) in COUNTER_RULES.items():
        found = rising(gpu, GPU, pl.col(column), int(window_s * US), threshold)
        out += _rows(found, kind, _gpu_entity())
    dbe = pl.col("ecc_dbe_vol_total").fill_null(0)
    rise = pl.when(_starts(GPU)).then(0).otherwise(dbe - dbe.shift(1))
    out += _rows(run_starts(gpu, GPU, rise > 0, skip_first=False), "dbe", _gpu_entity())
    for column, kind in (("row_remap_pending", "row_remap_pending"),
                         ("row_remap_failure", "row_remap_failure")):
        out += _rows(run_starts(gpu, GPU, pl.col(column).fill_null(0) > 0, skip_first=True),
                     kind, _gpu_entity())
    throttled = (pl.col("throttle_reasons").fill_null(0).cast(pl.UInt64) & THERMAL_BITS) != 0
    out += _rows(run_starts(gpu, GPU, throttled, skip_first=False, min_len=2, detect_at=1),
                 "thermal_throttle", _gpu_entity())
    return out


def presence(gpu: pl.DataFrame) -> list[Detection]:
    """Nodes and GPUs missing from scrapes while the scrape goes on (absence is not zero)."""
    scrapes = gpu.select(pl.col("t").unique().sort()).with_row_index("i")
    n = scrapes.height
    at = scrapes["t"]
    node_rows = (gpu.group_by("node", "t").agg(pl.col("gpu").n_unique().alias("k"))
                 .join(scrapes, on="t").sort("node", "i"))
    out: list[Detection] = []
    # node_silent: gaps between consecutive scrapes the node answered, and a gap at the end.
    gaps = node_rows.select(
        "node", "i", pl.col("i").shift(-1).over("node").fill_null(n).alias("next"),
    ).filter(pl.col("next") - pl.col("i") - 1 >= MIN_MISSED_SCRAPES)
    for node, i, _next in gaps.iter_rows():
        out.append(("node_silent", c.node_entity(node), int(at[i + MIN_MISSED_SCRAPES])))
    # gpu_absent: scrapes where the node answered without one of the GPUs it has shown.
    gpus = gpu.select("node", "gpu").unique()
    node_gpus = gpus.group_by("node").agg(pl.len().alias("expected"))
    short = node_rows.join(node_gpus, on="node").filter(pl.col("k") < pl.col("expected"))
    if short.is_empty():
        return out
    missing = (short.select("node", "t", "i").join(gpus, on="node")
               .join(gpu.select("node", "gpu", "t"), on=["node", "gpu", "t"], how="anti"))
    first_i = node_rows.group_by("node").agg(pl.col("i").min().alias("first_i"))
    runs = (missing.sort("node", "gpu", "i")
            .with_columns((pl.col("i") - pl.int_range(pl.len()).over("node", "gpu"))
                          .alias("run"))
            .group_by("node", "gpu", "run").agg(pl.col("i").min().alias("a"), pl.len().alias("n"))
            .join(first_i, on="node")
            .filter((pl.col("n") >= MIN_MISSED_SCRAPES) & (pl.col("a") != pl.col("first_i"))))
    for node, g, a in runs.select("node", "gpu", "a").iter_rows():
        out.append(("gpu_absent", c.gpu_entity(node, int(g)), int(at[a + MIN_MISSED_SCRAPES - 1])))
    return out


def port_detections(port: pl.DataFrame) -> list[Detection]:
    out: list[Detection] = []
    errors = pl.col("symbol_error").fill_null(0) + pl.col("link_error_recovery").fill_null(0)
    out += _rows(rising(port, PORT, errors, ERROR_WINDOW_S * US, SYMBOL_THRESHOLD),
                 "port_errors", _link_entity())
    out += _rows(rising(port, PORT, pl.col("rcv_errors"), ERROR_WINDOW_S * US, RCV_THRESHOLD),
                 "rcv_errors", _link_entity())
    down = pl.col("link_state").is_not_null() & (pl.col("link_state") <= c.PORT_STATE_DOWN)
    out += _rows(run_starts(port, PORT, down, skip_first=True), "link_down", _link_entity())
    return out


def xid_detections(xid: pl.DataFrame) -> list[Detection]:
    hits = xid.filter(~pl.col("xid").is_in(list(BENIGN_XIDS))
                      & (pl.col("xid").is_in(list(XID_HINTS)) | pl.col("fatal")))
    entity = (pl.when(pl.col("gpu").is_null()).then(pl.format("node:{}", pl.col("node")))
              .otherwise(_gpu_entity()))
    return _rows(hits.rename({"t": "detect_us"}), "xid", entity)


GPU_SQL = ("SELECT node, gpu, epoch_us(ts) AS t, ecc_sbe_vol_total, ecc_dbe_vol_total, "
           "sram_ecc_total, nvlink_crc_flit_errors, row_remap_pending, row_remap_failure, "
           "throttle_reasons FROM gpu_samples")
PORT_SQL = ("SELECT switch, port, epoch_us(ts) AS t, symbol_error, rcv_errors, "
            "link_error_recovery, link_state FROM port_samples")
XID_SQL = "SELECT node, gpu, epoch_us(ts) AS t, xid, fatal FROM xid_events"


def sort_entities(frame: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Sorted by entity, then time. A store's rows arrive in time order per entity, so a stable
    sort on the entity keys is enough (3x cheaper than sorting on time too); checked, and
    sorted fully when not so."""
    out = frame.sort(keys, maintain_order=True)
    in_order = out.select(((pl.col("t").diff() >= 0) | _starts(keys)).all()).item()
    return out if in_order else out.sort([*keys, "t"])


def detect_polars(db: Path) -> dict[str, Any]:
    """Load the three views into polars and run every rule; timings split load / compute."""
    import duckdb

    timings: dict[str, float] = {}
    started = time.perf_counter()
    con = duckdb.connect(str(db), read_only=True)
    gpu = sort_entities(con.sql(GPU_SQL).pl(), GPU)
    port = sort_entities(con.sql(PORT_SQL).pl(), PORT)
    xid = con.sql(XID_SQL).pl()
    con.close()
    timings["load_and_sort"] = round(time.perf_counter() - started, 3)
    found: list[Detection] = []
    steps: tuple[tuple[str, Callable[[], list[Detection]]], ...] = (
        ("xid", lambda: xid_detections(xid)), ("gpu", lambda: gpu_detections(gpu)),
        ("presence", lambda: presence(gpu)), ("ports", lambda: port_detections(port)))
    for name, step in steps:
        t0 = time.perf_counter()
        found += step()
        timings[name] = round(time.perf_counter() - t0, 3)
    timings["total"] = round(time.perf_counter() - started, 3)
    return {"engine": "polars", "gpu_rows": gpu.height, "port_rows": port.height,
            "seconds": timings, "detections": sorted(set(found))}


def detect_fleetlog(db: Path) -> dict[str, Any]:
    """fleetlog's findings of the same kinds (``analysis.pipeline.analyze_store``, what
    `fleetlog analyze` runs), with its own stage timings."""
    from fleetlog.analysis.pipeline import analyze_store
    from fleetlog.ingest.store import open_store

    started = time.perf_counter()
    con = open_store(db, read_only=True)
    result = analyze_store(con)
    con.close()
    found = {(f.kind, f.entity, f.detect_us) for f in result.findings if f.kind in KINDS}
    return {"engine": "fleetlog", "seconds": {**result.timings,
                                               "wall": round(time.perf_counter() - started, 3)},
            "incidents": len(result.incidents), "detections": sorted(found)}


def agreement(a: Iterable[Sequence[Any]], b: Iterable[Sequence[Any]]) -> dict[str, Any]:
    """How far two detection sets agree, per kind and overall. Each detection is a
    ``Detection`` or, read back from a step's JSON output, its ``[kind, entity, detect_us]``."""
    sa, sb = set(map(tuple, a)), set(map(tuple, b))
    kinds: dict[str, dict[str, int]] = {}
    for kind in sorted({k for k, _e, _t in sa | sb}):
        ka = {d for d in sa if d[0] == kind}
        kb = {d for d in sb if d[0] == kind}
        kinds[kind] = {"fleetlog": len(ka), "polars": len(kb), "both": len(ka & kb)}
    union = sa | sb
    return {
        "fleetlog": len(sa), "polars": len(sb), "both": len(sa & sb),
        "agree": sa == sb, "jaccard": round(len(sa & sb) / len(union), 4) if union else 1.0,
        "only_fleetlog": [list(d) for d in sorted(sa - sb)[:10]],
        "only_polars": [list(d) for d in sorted(sb - sa)[:10]],
        "by_kind": kinds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--engine", choices=["polars", "fleetlog"], default="polars")
    parser.add_argument("--compare", action="store_true",
                        help="run both in this process and report their agreement")
    parser.add_argument("--detections", action="store_true", help="list every detection")
    args = parser.parse_args()
    if args.compare:
        fl, po = detect_fleetlog(args.db), detect_polars(args.db)
        out: dict[str, Any] = {"fleetlog_s": fl["seconds"], "polars_s": po["seconds"],
                               "agreement": agreement(fl["detections"], po["detections"])}
    else:
        out = (detect_polars if args.engine == "polars" else detect_fleetlog)(args.db)
        out["count"] = len(out["detections"])
        if not args.detections:
            out["by_kind"] = {k: sum(1 for d in out["detections"] if d[0] == k) for k in KINDS}
            del out["detections"]
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
