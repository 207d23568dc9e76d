"""The learned detector against the rules alone, on runs no test and no tuning uses (issue #19).

    .venv/bin/python bench/learned_eval.py            # seeds 801-805, then the 512-node cost run
    .venv/bin/python bench/learned_eval.py --seeds 801 --no-cost   # one seed, quick

Per seed it simulates ``failslow`` (64 nodes x 3 h), ``quiet_confounders`` (64 nodes x 12 h) and
``mixed --shapes wide --fault-rate 40`` (64 nodes x 12 h), analyzes each twice (the default
detectors; the default detectors plus ``learned``) and prints, pooled over the seeds:

- per fail-slow kind (the first word of the truth's ``detail``): faults, recall, AC@1, median
  time to detect from the first symptom;
- per scenario: precision, recall, F1, AC@1, false alarms (and duplicates) per 1,000
  node-hours;
- the analysis time of each run, and of one 512-node x 6 h ``mixed --shapes wide`` run (a
  2,048-node day is 16 times that).

Stores go to a temporary directory (``--keep DIR`` to keep them). The seeds are this bench's:
no test and no calibration uses 801-805 (tests use seeds below 100; calibration 501-503, 601).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from fleetlog.analysis.evaluate import Scored, load_truth, report, score_store
from fleetlog.ingest.store import open_union

ROOT = Path(__file__).resolve().parents[1]
FLEETLOG = str(ROOT / ".venv" / "bin" / "fleetlog")
SCENARIOS: dict[str, list[str]] = {
    "failslow": ["--scenario", "failslow", "--nodes", "64", "--duration", "3h"],
    "quiet_confounders": ["--scenario", "quiet_confounders", "--nodes", "64", "--duration", "12h"],
    "mixed_wide": ["--scenario", "mixed", "--shapes", "wide", "--fault-rate", "40",
                   "--nodes", "64", "--duration", "12h"],
}
COST: list[str] = ["--scenario", "mixed", "--shapes", "wide", "--fault-rate", "10",
                   "--nodes", "512", "--duration", "6h"]
MODES: dict[str, tuple[str, ...]] = {"rules": (), "rules+learned": ("learned",)}


def simulate(path: Path, args: list[str], seed: int) -> None:
    if not path.exists():
        subprocess.run([FLEETLOG, "simulate", *args, "--seed", str(seed),
                        "--to", f"duckdb:{path}"], check=True, stdout=subprocess.DEVNULL)


def analyze(path: Path, optional: tuple[str, ...]) -> tuple[Scored, dict[str, str]]:
    """Scored run and fault id -> fail-slow kind (first word of the truth's detail)."""
    con = open_union([str(path)])
    try:
        scored = score_store(con, optional=optional)
        kinds = {fid: detail.split(":", 1)[0] for fid, detail in con.execute(
            "SELECT fault_id, coalesce(detail, '') FROM truth_faults").fetchall()}
        assert len(load_truth(con)) == len(kinds)
    finally:
        con.close()
    return scored, kinds


def per_kind(runs: list[tuple[Scored, dict[str, str]]]) -> dict[str, dict[str, Any]]:
    """Per kind: recall, AC@1, median time to detect, and precision: the incidents matched to
    its faults over those plus the duplicates that touch its faults (a false alarm related to
    no fault counts against no kind: see the scenario's false alarms)."""
    rows: dict[str, list[tuple[bool, bool, float | None]]] = defaultdict(list)
    extra: dict[str, int] = defaultdict(int)
    for scored, kinds in runs:
        for dup in scored.duplicates:
            for m in scored.matches:
                if dup.root == m.fault.entity or m.fault.entity in dup.affected or (
                        dup.root in m.fault.affected):
                    extra[kinds.get(m.fault.fault_id, "?")] += 1
                    break
        for m in scored.matches:
            inc = m.incident
            right = inc is not None and bool(inc.candidates) and (
                inc.candidates[0][0], inc.candidates[0][1]) == (m.fault.category, m.fault.entity)
            ttd = (inc.detect_us - m.fault.start_us) / 1e6 if inc is not None else None
            rows[kinds.get(m.fault.fault_id, "?")].append((inc is not None, right, ttd))
    out = {}
    for kind, items in sorted(rows.items()):
        ttds = [t for found, _r, t in items if found and t is not None]
        found = sum(f for f, _r, _t in items)
        out[kind] = {
            "faults": len(items),
            "recall": round(found / len(items), 3),
            "precision": round(found / (found + extra[kind]), 3) if found + extra[kind] else None,
            "ac1": round(sum(r for _f, r, _t in items) / len(items), 3),
            "ttd_median_s": round(statistics.median(ttds)) if ttds else None,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="801,802,803,804,805")
    parser.add_argument("--keep", type=Path, default=None, help="keep the stores here")
    parser.add_argument("--no-cost", action="store_true", help="skip the 512-node cost run")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    tmp = None if args.keep else tempfile.TemporaryDirectory(prefix="fleetlog-learned-")
    where = args.keep or Path(tmp.name)  # type: ignore[union-attr]
    where.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {"seeds": seeds, "scenarios": {}, "kinds": {}}
    for name, sim_args in SCENARIOS.items():
        paths = []
        for seed in seeds:
            path = where / f"{name}-{seed}.duckdb"
            simulate(path, sim_args, seed)
            paths.append(path)
        for mode, optional in MODES.items():
            runs = [analyze(p, optional) for p in paths]
            pooled = report([s for s, _k in runs])
            figures["scenarios"].setdefault(name, {})[mode] = {
                key: pooled[key] for key in ("faults", "incidents", "precision", "recall", "f1",
                                             "false_alarms", "duplicates",
                                             "false_alarms_per_1000_node_hours",
                                             "node_hours", "analysis_seconds")
            } | {"ac1": pooled["overall"]["ac1"]}
            if name == "failslow":
                figures["kinds"][mode] = per_kind(runs)
            print(f"{name:18s} {mode:14s} " + json.dumps(figures["scenarios"][name][mode]),
                  file=sys.stderr)
    if not args.no_cost:
        path = where / "cost-512x6h.duckdb"
        simulate(path, COST, seeds[0])
        for mode, optional in MODES.items():
            scored, _kinds = analyze(path, optional)
            figures.setdefault("cost_512_nodes_6h_s", {})[mode] = scored.analysis_s
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(render(figures))
    if tmp is not None:
        tmp.cleanup()


def _num(value: float | None) -> str:
    return "  —  " if value is None else f"{value:.3f}"


def render(figures: dict[str, Any]) -> str:
    lines = [f"seeds {figures['seeds']}", "", "fail-slow kinds (failslow, 64 nodes x 3 h):",
             f"{'kind':18s} {'mode':14s} faults recall prec.  AC@1  ttd median s"]
    for mode, kinds in figures["kinds"].items():
        for kind, k in kinds.items():
            lines.append(f"{kind:18s} {mode:14s} {k['faults']:6d} {k['recall']:6.3f} "
                         f"{_num(k['precision'])}  "
                         f"{k['ac1']:5.3f}  {k['ttd_median_s']}")
    lines += ["", f"{'scenario':18s} {'mode':14s} faults incid. prec.  recall F1     AC@1   "
              "FA/1000nh  analysis s (per run)"]
    for name, modes in figures["scenarios"].items():
        for mode, s in modes.items():
            lines.append(
                f"{name:18s} {mode:14s} {s['faults']:6d} {s['incidents']:6d} "
                f"{s['precision']:.3f}  {s['recall']:.3f}  {s['f1']:.3f}  "
                f"{_num(s['ac1'])}  "
                f"{s['false_alarms_per_1000_node_hours']:9.3f}  {s['analysis_seconds']}")
    if "cost_512_nodes_6h_s" in figures:
        lines += ["", f"512 nodes x 6 h analysis: {figures['cost_512_nodes_6h_s']} s "
                  "(a 2,048-node day is 16x the data)"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
