"""BENCHMARKS.md and its plots, from the JSON that ``bench/suite.py`` saved (never by hand).

    .venv/bin/python bench/render.py bench/results/benchmarks.json [--doc BENCHMARKS.md]

Plots are PNG files beside the JSON (matplotlib, Agg backend). A hand-written reading of the
numbers, if present as ``notes.md`` beside the JSON, is included as it is.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

SUPERLINEAR = 1.15  # a cost exponent above this (cost ~ size^k) is called faster than linear
GOAL_INGEST = 1_000_000  # GPU-samples/s end to end
GOAL_DAY_S = 30.0
GOAL_FLAT_MB_PER_MIN = 1.0


# ------------------------------------------------------------------------------------------
# Formatting


def num(value: Any, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, int | float):
        if digits == 0:
            return f"{round(value):,}"
        return f"{value:,.{digits}f}"
    return str(value)


def mb(value: Any) -> str:
    return num(value, 0) if value is not None else "—"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return [*out, ""]


def load1(run: dict[str, Any] | None) -> str:
    load = (run or {}).get("load")
    return num(load[0], 2) if isinstance(load, list) and load else "—"


def loads(runs: Sequence[dict[str, Any]]) -> str:
    return ", ".join(load1(r) for r in runs) or "—"


def med(block: dict[str, Any] | None, key: str) -> Any:
    return ((block or {}).get("median") or {}).get(key)


def ratio(a: Any, b: Any) -> str:
    if not isinstance(a, int | float) or not isinstance(b, int | float) or not b:
        return "—"
    return f"{a / b:.2f}"


def exponent(x0: float, x1: float, y0: Any, y1: Any) -> float | None:
    """k in y ~ x^k between two points (None when not measurable)."""
    if not all(isinstance(v, int | float) and v > 0 for v in (x0, x1, y0, y1)) or x0 == x1:
        return None
    return math.log(y1 / y0) / math.log(x1 / x0)


# ------------------------------------------------------------------------------------------
# Plots


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 110, "font.size": 9, "axes.grid": True,
                         "grid.alpha": 0.3})
    return plt


def _save(fig: Any, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path.name


def plot_bars(path: Path, title: str, labels: list[str], values: list[float], unit: str,
              goal: float | None = None) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    bars = ax.barh(labels[::-1], values[::-1], color="#4c72b0")
    for bar, value in zip(bars, values[::-1], strict=True):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {value:,.0f}",
                va="center", fontsize=8)
    if goal:
        ax.axvline(goal, color="#c44e52", linestyle="--", label=f"goal {goal:,.0f}")
        ax.legend(loc="lower right")
    ax.set_xlabel(unit)
    ax.set_title(title)
    ax.set_xlim(0, max([*values, goal or 0]) * 1.25 or 1)
    return _save(fig, path)


def _no_minor_labels(ax: Any) -> None:
    from matplotlib.ticker import NullFormatter

    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())


def plot_scaling(path: Path, curves: dict[str, list[dict[str, Any]]]) -> str:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, (name, points) in zip(axes, curves.items(), strict=True):
        xs = [p["gpu_samples"] for p in points]
        series = {
            "fleetlog ingest (active s)": [med(p.get("ingest"), "active_s") for p in points],
            "fleetlog analyze (s)": [med((p.get("analysis") or {}).get("fleetlog"), "total_s")
                                     for p in points],
            "polars detections (s)": [med((p.get("analysis") or {}).get("polars"), "total_s")
                                      for p in points],
        }
        for label, ys in series.items():
            pts = [(x, y) for x, y in zip(xs, ys, strict=True) if isinstance(y, int | float)]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=label)
        if xs and isinstance(series["fleetlog ingest (active s)"][0], int | float):
            y0 = series["fleetlog ingest (active s)"][0]
            ax.plot(xs, [y0 * x / xs[0] for x in xs], color="grey", linestyle=":",
                    label="linear from the first point")
        ax.set_xscale("log")
        ax.set_yscale("log")
        _no_minor_labels(ax)
        ax.set_xlabel("GPU samples in the data")
        ax.set_ylabel("seconds")
        ax.set_title(name)
        ax.legend(fontsize=7)
    return _save(fig, path)


def plot_memory(path: Path, points: list[dict[str, Any]]) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    points = sorted(points, key=lambda p: p["gpu_samples"])
    xs = [p["gpu_samples"] for p in points]
    series: tuple[tuple[str, Callable[[dict[str, Any]], Any]], ...] = (
        ("fleetlog ingest (both processes)", lambda p: med(p.get("ingest"), "peak_rss_mb")),
        ("fleetlog analyze", lambda p: med((p.get("analysis") or {}).get("fleetlog"),
                                           "peak_rss_mb")),
        ("polars detections", lambda p: med((p.get("analysis") or {}).get("polars"),
                                            "peak_rss_mb")),
    )
    for label, get in series:
        pts = [(x, get(p)) for x, p in zip(xs, points, strict=True)
               if isinstance(get(p), int | float)]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", label=label)
    ax.set_xscale("log")
    _no_minor_labels(ax)
    ax.set_xlabel("GPU samples in the data")
    ax.set_ylabel("peak RSS (MiB)")
    ax.set_title("Memory vs data size")
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_soak(path: Path, soak: dict[str, Any]) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    samples = soak.get("samples") or []
    if samples:
        ts, ys = zip(*samples, strict=True)
        ax.plot([t / 60 for t in ts], ys, marker=".", label="ingester RSS (both processes)")
    fit = soak.get("fit") or {}
    if "slope_mb_per_min" in fit and samples:
        x0, x1 = fit["warmup_s"] / 60, samples[-1][0] / 60
        f0 = fit["intercept_mb"] + fit["slope_mb_per_min"] * x0
        f1 = fit["intercept_mb"] + fit["slope_mb_per_min"] * x1
        ax.plot([x0, x1], [f0, f1], color="#c44e52", linestyle="--",
                label=f"fit after warm-up: {fit['slope_mb_per_min']:+.2f} MiB/min")
    ax.set_xlabel("minutes following the stream")
    ax.set_ylabel("RSS (MiB)")
    ax.set_ylim(bottom=0)
    ax.set_title("Ingester memory while following a live stream")
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_scaleout(path: Path, rows: list[dict[str, Any]]) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.2))
    ks = [r["ingesters"] for r in rows]
    ys = [med(r, "gpu_samples_per_s") or 0 for r in rows]
    ax.plot(ks, ys, marker="o", label="measured (aggregate)")
    if ys and ys[0]:
        ax.plot(ks, [ys[0] * k for k in ks], color="grey", linestyle=":", label="perfect scaling")
    ax.set_xticks(ks)
    ax.set_xlabel("ingesters in one consumer group")
    ax.set_ylabel("GPU-samples/s")
    ax.set_title("Scale-out (gpu topic)")
    ax.legend(fontsize=7)
    return _save(fig, path)


# ------------------------------------------------------------------------------------------
# Sections


def goals(data: dict[str, Any]) -> list[str]:
    landing = ((data.get("landing") or {}).get("clients") or {}).get("fleetlog ingest")
    ingest_rate = med(landing, "gpu_samples_per_s")
    main = _main_point(data)
    all_topics = med((main or {}).get("ingest"), "gpu_samples_per_s")
    day = data.get("day") or {}
    day_s = med(((day.get("analysis") or {}).get("fleetlog")), "total_s")
    day_wall = med(((day.get("analysis") or {}).get("fleetlog")), "process_wall_s")
    fit = (data.get("soak") or {}).get("fit") or {}
    slope = fit.get("slope_mb_per_min")
    soak_min = (data.get("soak") or {}).get("seconds", 0) / 60

    def met(ok: bool | None) -> str:
        return "—" if ok is None else ("**met**" if ok else "**not met**")

    group_k, group_rate = _best_group(data)
    grouped = "" if group_rate is None else (
        f"; {group_k} ingesters in one group on the same topic (a backlog): {num(group_rate)}")
    best = max([r for r in (ingest_rate, group_rate) if r is not None], default=None)
    verdict = met(None if best is None else best >= GOAL_INGEST)
    if best is not None and best >= GOAL_INGEST and (ingest_rate or 0) < GOAL_INGEST:
        verdict += f" (with {group_k} ingesters; not by one)"
    rows = [
        ["ingest, end to end (Kafka -> DuckDB, this 2-core machine)", "≥ 1,000,000 GPU-samples/s",
         f"one ingester {num(ingest_rate)} GPU-samples/s (gpu topic only){grouped}; "
         f"{num(all_topics)} with every topic (GPU and port samples, jobs, inventory), one "
         "ingester", verdict],
        [f"analysis of a {day.get('nodes', '—')}-node, {day.get('hours', '—')} h store",
         f"≤ {GOAL_DAY_S:.0f} s",
         f"{num(day_s, 1)} s in the analysis ({num(day_wall, 1)} s for the whole "
         "`fleetlog analyze` process)",
         met(None if day_s is None else day_s <= GOAL_DAY_S)],
        [f"ingester memory while following a live stream ({soak_min:g} min)",
         f"flat (slope < {GOAL_FLAT_MB_PER_MIN:g} MiB/min after warm-up)",
         f"{num(slope, 2)} MiB/min ({num(fit.get('first_mb'))} -> {num(fit.get('last_mb'))} MiB,"
         f" peak {num(fit.get('peak_mb'))})",
         met(None if slope is None else abs(slope) < GOAL_FLAT_MB_PER_MIN)],
    ]
    return ["## Goals", "", *table(["goal", "target", "measured (median)", ""], rows)]


def _best_group(data: dict[str, Any]) -> tuple[int | None, float | None]:
    """The fastest group of more than one ingester on the backlog: (ingesters, median rate)."""
    rows = [(r["ingesters"], med(r, "gpu_samples_per_s")) for r in data.get("backlog") or []
            if r["ingesters"] > 1 and all(run.get("complete") for run in r.get("runs", []))]
    rows = [(k, rate) for k, rate in rows if rate is not None]
    return max(rows, key=lambda kr: kr[1]) if rows else (None, None)


def _main_point(data: dict[str, Any]) -> dict[str, Any] | None:
    if data.get("main"):  # a point of its own (a longer window than the size curve's)
        return dict(data["main"])
    main_nodes = data.get("settings", {}).get("main_nodes")
    for p in (data.get("scaling") or {}).get("size", []):
        if p["nodes"] == main_nodes:
            return dict(p)
    return None


def environment(data: dict[str, Any]) -> list[str]:
    m, v, s = data.get("machine", {}), data.get("versions", {}), data.get("settings", {})
    out = ["## Machine, versions, settings", ""]
    out += table(["machine", ""], [
        ["CPU", f"{m.get('cores')} cores, {m.get('cpu_model')}"],
        ["RAM", f"{m.get('ram_gib')} GiB"], ["OS", m.get("os")],
        ["load average at start (1/5/15 min)", ", ".join(num(x, 2) for x in
                                                         m.get("load_at_start", []))],
        ["free disk under the work folder (start / lowest seen)",
         " / ".join(f"{(m.get('disk_free_gib') or {}).get(k, '—')} GiB"
                    for k in ("start", "lowest"))],
    ])
    out += ["The machine is shared (other engineers' builds and tests run on it): every table "
            "gives the 1-minute load average at the start of each run.", ""]
    out += table(["component", "version"], [[k, val] for k, val in v.items()])
    out += table(["setting", "value"], [
        ["runs per measurement (medians reported)", s.get("runs")],
        ["scaling: fleet sizes (nodes of 8 GPUs)",
         f"{', '.join(num(x) for x in s.get('sizes', []))} at {s.get('size_hours')} h"],
        ["scaling: time windows", f"{', '.join(str(x) for x in s.get('windows', []))} h at "
                                  f"{s.get('window_nodes')} nodes"],
        ["main point (producing, landing, scale-out)",
         f"{num(s.get('main_nodes'))} nodes x {s.get('main_hours') or s.get('size_hours')} h"],
        ["topics", f"{s.get('partitions')} partitions each, replication 1, one local broker"],
        ["generator", f"`fleetlog simulate`, {s.get('scenario', 'llama3')} scenario, seed 1, "
                      "fault rate "
                      f"{s.get('fault_rate')}, 10 s scrapes, one gpu.sampled per rack "
                      "(4 nodes x 8 GPUs) per scrape"],
        ["producers", "generator: kafka-python, linger 20 ms, 1 MiB batches, no compression, "
                      "acks=all; perf test: linger.ms=20, batch.size=1 MiB, Java defaults "
                      "otherwise"],
        ["fleetlog ingest", f"defaults ({num(s.get('batch_messages'))} events per DuckDB "
                            "transaction, decode+write on a writer thread), `--until-idle 2`, "
                            "fresh store and group per run; the hand-written consumers insert "
                            "the same number of messages per transaction"],
        ["day store", f"{num(s.get('day_nodes'))} nodes x {s.get('day_hours')} h, fault rate "
                      f"{s.get('day_fault_rate')}, written by `fleetlog simulate --to duckdb:` "
                      "(not through Kafka)"],
        ["soak", f"{num(s.get('soak_nodes'))} nodes at {s.get('soak_speed')}x real time, RSS "
                 f"every {s.get('soak_every_s')} s for {s.get('soak_s')} s"],
    ])
    return out


def producing(data: dict[str, Any], folder: Path, doc: Path) -> list[str]:
    p = data.get("produce")
    if not p:
        return []
    gen, perf = p.get("generator") or {}, p.get("perf_test") or {}
    null = data.get("generator_null") or {}
    rows = [
        ["`fleetlog simulate --to kafka://` (generator + kafka-python)",
         num(med(gen, "messages_per_s")), num(med(gen, "mb_per_s"), 1),
         num(med(gen, "gpu_samples_per_s")), num(med(gen, "record_size")),
         loads(gen.get("runs", []))],
        ["kafka-producer-perf-test (same count and size of records)",
         num(med(perf, "messages_per_s")), num(med(perf, "mb_per_s"), 1), "—",
         num(med(perf, "record_size")), loads(perf.get("runs", []))],
        ["`fleetlog simulate --to null:` (generation alone, 1 run)", "—", "—",
         num(null.get("gpu_samples_per_s")), "—", load1(null)],
    ]
    png = plot_bars(folder / "produce.png", "Producing into Kafka (MB/s)",
                    ["generator -> Kafka", "kafka-producer-perf-test"],
                    [med(gen, "mb_per_s") or 0, med(perf, "mb_per_s") or 0], "MB/s")
    out = ["## Producing: the generator vs the broker's ceiling", "",
           f"{num(p.get('nodes'))} nodes x {p.get('hours')} h of telemetry "
           f"({num(med(gen, 'messages'))} messages, every topic), median of "
           f"{len(gen.get('runs', []))} runs.", ""]
    out += table(["producer", "messages/s", "MB/s", "GPU-samples/s", "bytes/message",
                  "load at start"], rows)
    out += [f"Generator / perf test: **{ratio(med(gen, 'mb_per_s'), med(perf, 'mb_per_s'))}x** "
            "in MB/s. The generator pays for simulating the cluster too (see the null "
            "row: its own ceiling without Kafka).", "",
            f"![producing]({_rel(folder / png, doc)})", ""]
    return out


def landing(data: dict[str, Any], folder: Path, doc: Path) -> list[str]:
    land = data.get("landing")
    if not land:
        return []
    clients = land["clients"]
    ceiling = med(clients.get("kafka-consumer-perf-test"), "gpu_samples_per_s")
    rows = []
    landed_all: dict[bool | None, str] = {True: "yes", False: "**no**"}  # None: not measured
    for name, label in (
        ("kafka-consumer-perf-test", "kafka-consumer-perf-test (no decode, no DuckDB: ceiling)"),
        ("fleetlog ingest", "`fleetlog ingest --topics gpu`"),
        ("confluent-kafka", "hand-written confluent-kafka consumer -> DuckDB"),
        ("quixstreams", "quixstreams Application + BatchingSink -> DuckDB"),
    ):
        block = clients.get(name) or {}
        rate = med(block, "gpu_samples_per_s")
        rows.append([label, num(rate), num(med(block, "messages_per_s")),
                     num(med(block, "active_s"), 2), num(med(block, "cpu_s"), 1),
                     mb(med(block, "peak_rss_mb")),
                     landed_all.get(block.get("landed_all"), "—"),
                     ratio(rate, ceiling), loads(block.get("runs", []))])
    fl = med(clients.get("fleetlog ingest"), "gpu_samples_per_s")
    names = ["kafka-consumer-perf-test", "fleetlog ingest", "confluent-kafka", "quixstreams"]
    png = plot_bars(folder / "landing.png", "Landing the gpu topic in DuckDB (GPU-samples/s)",
                    names, [med(clients.get(n), "gpu_samples_per_s") or 0 for n in names],
                    "GPU-samples/s", goal=GOAL_INGEST)
    out = ["## Landing in DuckDB: fleetlog ingest vs hand-written consumers", "",
           f"Same topic `{land['topic']}` ({num(land['messages'])} messages of "
           f"{num(land['gpu_samples_per_message'], 0)} GPU samples, ~{num(land['message_bytes'])}"
           f" bytes each; {num(land['gpu_samples'])} GPU samples), read from the start by each "
           "client in turn (round robin, fresh consumer group and store each time). Rates run "
           "from the first record to the last commit; CPU is the whole process (all threads).",
           ""]
    out += table(["consumer", "GPU-samples/s", "messages/s", "active s", "CPU s",
                  "peak RSS MiB", "landed every row", "/ ceiling", "load at start"], rows)
    out += [f"fleetlog / confluent-kafka by hand: **{ratio(fl, med(clients.get('confluent-kafka'), 'gpu_samples_per_s'))}x**; "  # noqa: E501
            f"fleetlog / quixstreams: **{ratio(fl, med(clients.get('quixstreams'), 'gpu_samples_per_s'))}x**.",  # noqa: E501
            "",
            "What each does: fleetlog lands rows, the event log and the partition offsets in one "
            "DuckDB transaction per batch and skips event ids already stored (exactly once in "
            "effect); the hand-written consumer and the quixstreams sink insert the same "
            "gpu_samples rows and then commit offsets to Kafka (at least once: a crash between "
            "the two lands a batch twice).", "",
            f"![landing]({_rel(folder / png, doc)})", ""]
    return out


def _point_label(p: dict[str, Any]) -> str:
    return f"{num(p['nodes'])} nodes x {p['hours']:g} h"


def analysis(data: dict[str, Any], folder: Path, doc: Path) -> list[str]:
    points = _all_points(data)
    if not points:
        return []
    rows = []
    for p in points:
        a = p.get("analysis") or {}
        fl, po, ag = a.get("fleetlog"), a.get("polars"), a.get("agreement") or {}
        agree = (f"{'yes' if ag.get('agree') else '**no**'} ({ag.get('both')} of "
                 f"{ag.get('fleetlog')} / {ag.get('polars')})") if ag else "—"
        rows.append([_point_label(p), num(p["store"]["gpu_rows"]), num(p["store"]["port_rows"]),
                     num(med(fl, "total_s"), 2), mb(med(fl, "peak_rss_mb")),
                     num(med(po, "total_s"), 2), mb(med(po, "peak_rss_mb")),
                     ratio(med(po, "total_s"), med(fl, "total_s")), agree,
                     loads((fl or {}).get("runs", []))])
    out = ["## Analysis: fleetlog analyze vs the same detections in polars", "",
           "`fleetlog analyze --no-write` (every detector, diagnosis, on the whole store) against "
           "bench/polars_detect.py: the explicit rules (hardware/fatal XIDs, DBE and row-remap "
           "flags, SBE/SRAM/NVLink counters rising, thermal throttling, missing nodes and GPUs, "
           "IB port errors and link down) written directly in polars over the same store's "
           "views, loaded through Arrow. Agreement compares the sets of (kind, entity, detection "
           "time) of those rules: fleetlog's findings vs polars'. Times are each tool's own "
           "(polars: load + sort + rules); peak RSS is the process.", ""]
    out += table(["store", "GPU rows", "port rows", "fleetlog s", "fleetlog MiB", "polars s",
                  "polars MiB", "polars / fleetlog", "same detections (both of fleetlog / "
                  "polars)", "load at start"], rows)
    main = _main_point(data)
    ag = ((main or {}).get("analysis") or {}).get("agreement")
    if ag and ag.get("by_kind"):
        out += [f"Detections by kind at the main point ({_point_label(main or {})}):", ""]
        out += table(["kind", "fleetlog", "polars", "both"],
                     [[k, v["fleetlog"], v["polars"], v["both"]] for k, v in
                      ag["by_kind"].items()])
    for p in points:
        failed = (p.get("analysis") or {}).get("polars_failed")
        if failed:
            out += [f"Polars failed at {_point_label(p)}: `{failed.splitlines()[-1][:200]}`", ""]
    diffs = [(p, (p.get("analysis") or {}).get("agreement")) for p in points]
    for p, d in diffs:
        if d and not d.get("agree"):
            out += [f"Differences at {_point_label(p)}: only fleetlog {d['only_fleetlog']}, "
                    f"only polars {d['only_polars']}", ""]
    return out


def _all_points(data: dict[str, Any]) -> list[dict[str, Any]]:
    seen, out = set(), []
    scaling = data.get("scaling") or {}
    for p in [*scaling.get("size", []), *scaling.get("window", [])]:
        key = (p["nodes"], p["hours"])
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def _stage_exponents(p0: dict[str, Any], p1: dict[str, Any]) -> list[tuple[str, float, float]]:
    """(stage, seconds at p1, exponent) of fleetlog analyze's stages between two points."""
    s0 = med((p0.get("analysis") or {}).get("fleetlog"), "stages") or {}
    s1 = med((p1.get("analysis") or {}).get("fleetlog"), "stages") or {}
    x0, x1 = p0["gpu_samples"], p1["gpu_samples"]
    out = []
    for stage, t1 in s1.items():
        k = exponent(x0, x1, s0.get(stage), t1)
        if k is not None and stage != "total" and t1 >= 0.05:
            out.append((stage, t1, k))
    return sorted(out, key=lambda r: -r[1])


def scaling(data: dict[str, Any], folder: Path, doc: Path) -> list[str]:
    sc = data.get("scaling") or {}
    if not sc.get("size"):
        return []
    out = ["## Scaling: time and memory vs fleet size and time window", "",
           "Each point: the generator into fresh topics, `fleetlog ingest` of every topic into a "
           "fresh store (medians of the runs), then `fleetlog analyze` and polars on that store. "
           "Cost per GPU sample (µs, ingest active time / GPU samples) shows linearity directly; "
           "the exponent k (cost ∝ size^k between consecutive points) is ~1 when linear, "
           f"> {SUPERLINEAR} is called faster than linear below.", ""]
    superlinear: list[str] = []
    for name, points in (("fleet size", sc.get("size", [])), ("time window",
                                                              sc.get("window", []))):
        points = sorted(points, key=lambda p: p["gpu_samples"])
        rows = []
        for i, p in enumerate(points):
            ing = p.get("ingest")
            fl = (p.get("analysis") or {}).get("fleetlog")
            po = (p.get("analysis") or {}).get("polars")
            active, total = med(ing, "active_s"), med(fl, "total_s")
            k_ing = k_an = k_po = None
            if i:
                q = points[i - 1]
                x0, x1 = q["gpu_samples"], p["gpu_samples"]
                k_ing = exponent(x0, x1, med(q.get("ingest"), "active_s"), active)
                k_an = exponent(x0, x1, med((q.get("analysis") or {}).get("fleetlog"),
                                            "total_s"), total)
                k_po = exponent(x0, x1, med((q.get("analysis") or {}).get("polars"),
                                            "total_s"), med(po, "total_s"))
                segment = f"{name} {_point_label(q)} -> {_point_label(p)} (data x{x1 / x0:.1f})"
                loads_at = (f"load at start {load1((q.get('ingest') or {}).get('runs', [{}])[0])}"
                            f" -> {load1((p.get('ingest') or {}).get('runs', [{}])[0])}")
                ps0 = med((q.get("analysis") or {}).get("polars"), "stages") or {}
                ps1 = med(po, "stages") or {}
                grew = [(st, t, exponent(x0, x1, ps0.get(st), t)) for st, t in ps1.items()
                        if st != "total" and t >= 0.05]
                grew = sorted([g for g in grew if g[2] is not None and g[2] > SUPERLINEAR],
                              key=lambda g: -g[1])
                for what, k in (("ingest", k_ing), ("fleetlog analyze", k_an),
                                ("polars", k_po)):
                    if k is not None and k > SUPERLINEAR:
                        superlinear.append(f"- **{what}**, {segment}: time x"
                                           f"{(x1 / x0) ** k:.1f}, k = {k:.2f} ({loads_at})")
                        if what == "polars" and grew:
                            superlinear.append("  - its stages: " + ", ".join(
                                f"{st} {t:.2f} s (k = {kk:.2f})" for st, t, kk in grew))
                top = [s for s in _stage_exponents(q, p) if s[2] > SUPERLINEAR][:3]
                if top:
                    superlinear.append(
                        f"- **fleetlog analyze stages**, {segment}: " + ", ".join(
                            f"{st} {t:.2f} s (k = {kk:.2f})" for st, t, kk in top)
                        + f" (whole analysis k = {num(k_an, 2)}; {loads_at})")
            store = p.get("store") or {}
            rows.append([
                _point_label(p), len((ing or {}).get("runs", [])), num(p["gpu_samples"]),
                num(med(ing, "gpu_samples_per_s")),
                num(active, 2), num(active / p["gpu_samples"] * 1e6, 2) if active else "—",
                num(k_ing, 2) if k_ing is not None else "",
                mb(med(ing, "peak_rss_mb")),
                num(store.get("db_bytes", 0) / p["gpu_samples"], 1),
                num(total, 2), num(k_an, 2) if k_an is not None else "",
                mb(med(fl, "peak_rss_mb")), num(med(po, "total_s"), 2),
                num(k_po, 2) if k_po is not None else "",
                loads((ing or {}).get("runs", [])),
            ])
        out += [f"### vs {name}", ""]
        out += table(["point", "ingest runs", "GPU samples", "ingest GPU-samples/s", "ingest s",
                      "µs / sample",
                      "k", "ingest MiB", "store bytes / GPU sample", "analyze s", "k",
                      "analyze MiB", "polars s", "k", "load at start"], rows)
    png = plot_scaling(folder / "scaling.png", {
        "vs fleet size": sorted(sc.get("size", []), key=lambda p: p["gpu_samples"]),
        "vs time window": sorted(sc.get("window", []), key=lambda p: p["gpu_samples"]),
    })
    mem = plot_memory(folder / "memory.png", _all_points(data))
    out += [f"![scaling]({_rel(folder / png, doc)})", "", f"![memory]({_rel(folder / mem, doc)})",
            ""]
    out += ["### Where cost grows faster than linearly (measured)", ""]
    out += superlinear or [f"- nowhere: every measured exponent is ≤ {SUPERLINEAR}."]
    out += [""]
    main = _main_point(data)
    sizes = sorted(sc.get("size", []), key=lambda p: p["gpu_samples"])
    if main and sizes:
        stage_rows = []
        for p in sizes:
            stages = med((p.get("analysis") or {}).get("fleetlog"), "stages") or {}
            stage_rows.append([_point_label(p)] + [num(stages.get(s), 2) for s in _STAGES])
        out += ["`fleetlog analyze` stage times (s, medians) vs fleet size:", ""]
        out += table(["point", *_STAGES], stage_rows)
    return out


_STAGES = ("projections", "xid", "presence", "gpu_counters", "thermal", "ports",
           "job_failures", "stalls", "loss", "stragglers", "diagnosis", "total")


def scaleout(data: dict[str, Any], folder: Path, doc: Path) -> list[str]:
    rows_in = data.get("scaleout")
    if not rows_in:
        return []
    base = med(rows_in[0], "gpu_samples_per_s")
    rows = []
    for r in rows_in:
        complete = all(run.get("complete") for run in r.get("runs", []))
        rows.append([r["ingesters"], num(med(r, "gpu_samples_per_s")),
                     ratio(med(r, "gpu_samples_per_s"), base), num(med(r, "span_s"), 2),
                     num(med(r, "copy_s"), 2), num(med(r, "group_settle_s"), 1),
                     mb(med(r, "peak_rss_mb_per_ingester")), "yes" if complete else "**no**",
                     loads(r.get("runs", []))])
    png = plot_scaleout(folder / "scaleout.png", rows_in)
    cores = data.get("machine", {}).get("cores")
    partitions = data.get("settings", {}).get("partitions")
    out = ["## Scale-out: ingesters in one consumer group", "",
           f"k × `fleetlog ingest --topics gpu --group G --db shard-i.duckdb` follow an empty "
           f"gpu topic of {partitions} partitions; once the group is stable (every partition "
           "assigned: no start-up or rebalance in the measurement), the main point's gpu "
           "messages are copied into it at full speed (confluent-kafka, keys kept). Aggregate "
           "rate = GPU samples landed by all / span from the earliest first record to the latest "
           "last commit (each shard's last rewrite of its `.offsets.json`). 'complete' = the "
           "shards together hold every sample once.", ""]
    out += table(["ingesters", "GPU-samples/s (aggregate)", "vs 1", "span s", "copy s",
                  "group settled after s", "peak RSS per ingester MiB", "complete",
                  "load at start"], rows)
    backlog = data.get("backlog") or []
    if backlog:
        first = med(backlog[0], "gpu_samples_per_s")
        out += ["On the backlog: k ingesters started together on the main point's gpu topic, "
                "full already (as after an outage), `--until-idle 5`, fresh group; the "
                "rebalances as members join fall inside the span.", ""]
        out += table(["ingesters", "GPU-samples/s (aggregate)", "vs 1", "span s",
                      "peak RSS per ingester MiB", "complete", "load at start"],
                     [[r["ingesters"], num(med(r, "gpu_samples_per_s")),
                       ratio(med(r, "gpu_samples_per_s"), first), num(med(r, "span_s"), 2),
                       mb(med(r, "peak_rss_mb_per_ingester")),
                       "yes" if all(run.get("complete") for run in r.get("runs", []))
                       else "**no**", loads(r.get("runs", []))] for r in backlog])
    out += [f"This machine has {cores} cores; each ingester is one process with three busy "
            "threads (kafka-python's I/O thread, the poll-and-decode loop, the DuckDB writer, "
            "itself multi-threaded while it inserts), and in the first table the copy into "
            "the topic runs during the measurement: beyond 1-2 ingesters this measures the cost of "
            "sharing two cores, not the scaling one would get with a core per ingester. "
            "Partitions, groups and shard files are what carry the scale-out to more "
            "machines (see docs/scale.md).", "",
            f"![scale-out]({_rel(folder / png, doc)})", ""]
    return out


def soak(data: dict[str, Any], folder: Path, doc: Path) -> list[str]:
    s = data.get("soak")
    if not s:
        return []
    fit = s.get("fit") or {}
    png = plot_soak(folder / "soak.png", s)
    out = ["## Memory while following a live stream", "",
           f"`fleetlog ingest` (follow mode, every topic) reading a live `fleetlog simulate "
           f"--speed {s.get('speed')}` stream of {num(s.get('nodes'))} nodes for "
           f"{s.get('seconds', 0) / 60:.0f} min; RSS of the ingester (its process tree) every "
           f"{s.get('every_s')} s. The first {num(fit.get('warmup_s'))} s are warm-up (imports, "
           "first batches); the slope is a least-squares fit over the rest. "
           + ("Nothing else of the suite ran meanwhile. " if s.get("alone") else
              "It ran while the day store was being built (untimed) on the same machine. ")
           + f"Load at start: {load1(s)}.", ""]
    out += table(["slope MiB/min", "growth over the fit MiB", "first MiB", "last MiB",
                  "peak MiB", "events landed", "GPU samples landed", "lag at stop",
                  "store MB"], [[
                      num(fit.get("slope_mb_per_min"), 2), num(fit.get("growth_mb"), 1),
                      num(fit.get("first_mb")), num(fit.get("last_mb")), num(fit.get("peak_mb")),
                      num(s.get("events")), num(s.get("gpu_samples")), num(s.get("lag_at_stop")),
                      num((s.get("db_bytes") or 0) / 1e6)]])
    out += [f"![soak]({_rel(folder / png, doc)})", ""]
    return out


def day(data: dict[str, Any]) -> list[str]:
    d = data.get("day")
    if not d:
        return []
    fl = (d.get("analysis") or {}).get("fleetlog") or {}
    stages = med(fl, "stages") or {}
    top = sorted(((k, v) for k, v in stages.items() if k != "total"), key=lambda kv: -kv[1])[:5]
    out = [f"## Analysis of a {num(d.get('nodes'))}-node, {d.get('hours')} h store", "",
           f"Built with `fleetlog simulate --nodes {d.get('nodes')} --duration {d.get('hours')}h "
           f"--fault-rate {d.get('fault_rate')} --to duckdb:` (not timed: the goal is the "
           "analysis), then `fleetlog analyze --no-write` on it.", ""]
    out += table(["GPU rows", "port rows", "store GB", "runs", "analysis s (median)",
                  "process s", "peak RSS MiB", "incidents", "slowest stages (s)",
                  "load at start"], [[
                      num(d.get("gpu_rows")), num(d.get("port_rows")),
                      num((d.get("db_bytes") or 0) / 1e9, 2), len(fl.get("runs", [])),
                      num(med(fl, "total_s"), 1),
                      num(med(fl, "process_wall_s"), 1), mb(med(fl, "peak_rss_mb")),
                      num(med(fl, "incidents")),
                      ", ".join(f"{k} {v:.1f}" for k, v in top), loads(fl.get("runs", []))]])
    skipped = (d.get("analysis") or {}).get("polars_skipped")
    if skipped:
        rows = (d.get("gpu_rows") or 0) + (d.get("port_rows") or 0)
        sized = [(med((p.get("analysis") or {}).get("polars"), "peak_rss_mb"),
                  p["store"]["gpu_rows"] + p["store"]["port_rows"]) for p in _all_points(data)]
        sized = [(m, n) for m, n in sized if isinstance(m, int | float) and n]
        text = "Polars was not run on this store: it holds every row in memory"
        if sized:
            m, n = max(sized, key=lambda mn: mn[1])
            ram = data.get("machine", {}).get("ram_gib") or 0
            text += (f"; at its largest scaling point it took {num(m)} MiB for {num(n)} sample "
                     f"rows, which scales to ~{m / n * rows / 1024:,.0f} GiB for this store's "
                     f"{num(rows)} (the machine has {ram} GiB)")
        out += [text + ".", ""]
    return out


def sizing(data: dict[str, Any]) -> list[str]:
    """The measured inputs docs/scale.md builds on."""
    main = _main_point(data)
    land = (data.get("landing") or {})
    if not main:
        return []
    fl = med(((land.get("clients") or {}).get("fleetlog ingest")), "gpu_samples_per_s")
    all_topics = med(main.get("ingest"), "gpu_samples_per_s")
    gpu_bytes = main["gpu_topic"]["bytes_on_broker"] / max(main["gpu_samples"], 1)
    db_per = main["store"]["db_bytes"] / max(main["gpu_samples"], 1)
    day = data.get("day") or {}
    day_per = (day.get("db_bytes") or 0) / max(day.get("gpu_rows") or 1, 1)
    rows = [
        ["one ingester, gpu topic only", f"{num(fl)} GPU-samples/s"],
        ["one ingester, every topic (GPU + port samples, jobs...)",
         f"{num(all_topics)} GPU-samples/s ({num(med(main.get('ingest'), 'sample_rows_per_s'))} "
         "sample rows/s)"],
        ["Kafka log bytes per GPU sample (gpu topic, msgpack, uncompressed)", num(gpu_bytes, 1)],
        ["DuckDB bytes per GPU sample, 15-min store (every topic landed)", num(db_per, 1)],
        ["DuckDB bytes per GPU sample, day store (every topic)", num(day_per, 1) if day_per
         else "—"],
    ]
    return ["## Sizing inputs (used by docs/scale.md)", "", *table(["measure", "value"], rows)]


def errors(data: dict[str, Any]) -> list[str]:
    errs, skipped = data.get("errors") or [], data.get("skipped") or []
    out = []
    if errs:
        out += ["## Steps that failed in this run", ""]
        for e in errs:
            out += [f"- {e['step']}: `{e['error'].strip().splitlines()[-1][:300]}`"]
        out += [""]
    if skipped:
        out += ["## Steps skipped to stay within the time budget", ""]
        out += [f"- {why}" for why in skipped] + [""]
    return out


def _rel(path: Path, doc: Path) -> str:
    return os.path.relpath(path, doc.parent)


def render(results: Path, doc: Path) -> None:
    data = json.loads(results.read_text())
    folder = results.parent
    mode = data.get("mode")
    out = ["# Benchmarks", "",
           f"Generated by `make bench{' BENCH_ARGS=--quick' if mode == 'quick' else ''}` "
           f"(bench/suite.py, {mode} mode) on {data.get('started')}, "
           f"{num(data.get('duration_s', 0) / 60, 1)} min; every number below comes from "
           f"[{results.name}]({_rel(results, doc)}) (re-render with `.venv/bin/python "
           f"bench/render.py {_rel(results, Path.cwd() / 'x')}`). Medians of "
           f"{data.get('settings', {}).get('runs')} runs unless a table says otherwise; the "
           "broker is a real Apache Kafka started by the suite on a private port.", ""]
    sections: list[Callable[[], list[str]]] = [
        lambda: goals(data), lambda: environment(data),
        lambda: producing(data, folder, doc), lambda: landing(data, folder, doc),
        lambda: analysis(data, folder, doc), lambda: day(data),
        lambda: scaling(data, folder, doc), lambda: scaleout(data, folder, doc),
        lambda: soak(data, folder, doc), lambda: sizing(data), lambda: errors(data),
    ]
    for section in sections:
        out += section()
    notes = folder / "notes.md"
    if notes.exists() and mode != "quick":
        out += [notes.read_text().strip(), ""]
    doc.write_text("\n".join(out).rstrip() + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--doc", type=Path, help="default: BENCHMARKS.md at the repository "
                        "root for a full run, <results folder>/BENCHMARKS.md for a quick one")
    args = parser.parse_args()
    data = json.loads(args.results.read_text())
    root = Path(__file__).resolve().parents[1]
    doc = args.doc or (args.results.parent / "BENCHMARKS.md" if data.get("mode") == "quick"
                       else root / "BENCHMARKS.md")
    render(args.results, doc)
    print(doc)


if __name__ == "__main__":
    main()
