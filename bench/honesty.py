"""How honest the analysis is on simulated runs: false alarms on healthy clusters, incidents per
fault episode, F1 / AC@1 per scenario and seed, and calibration (ECE).

    .venv/bin/python bench/honesty.py                      # the default matrix (a few minutes)
    .venv/bin/python bench/honesty.py --scenario network --seeds 21,22 --nodes 64 --hours 12

Each (scenario, seed) is simulated into a temporary store (embedded mode), analyzed and scored;
one JSON line per run, then the pooled figures. ``episodes`` counts, per truth fault, the
incidents whose root is the fault's entity (a flapping cable opening one incident per burst shows
up as more than one). The default seeds (21-24) are neither the tests' nor calibration's
(``analysis/calibration.py``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from fleetlog.analysis.evaluate import Scored, load_truth, report, score_store
from fleetlog.generators.config import SimConfig
from fleetlog.generators.run import simulate
from fleetlog.ingest.store import open_store

# (scenario, nodes, hours, fault rate)
MATRIX = (
    ("quiet", 64, 24.0, 1.0),
    ("migration", 64, 12.0, 1.0),
    ("llama3", 64, 24.0, 20.0),
    ("network", 64, 24.0, 20.0),
    ("storage", 64, 12.0, 1.0),
    ("gpu_thermal", 64, 12.0, 1.0),
    ("cooling", 64, 12.0, 1.0),
    ("mixed", 64, 6.0, 50.0),
)


def run_one(scenario: str, seed: int, nodes: int, hours: float, rate: float,
            folder: Path) -> tuple[Scored, dict[str, Any]]:
    db = folder / f"{scenario}-{seed}.duckdb"
    simulate(SimConfig(nodes=nodes, hours=hours, seed=seed, scenario=scenario,
                       fault_rate=rate), f"duckdb:{db}")
    con = open_store(db)
    try:
        scored = score_store(con)
        faults = load_truth(con)
    finally:
        con.close()
    one = report([scored])
    # Incidents per truth fault rooted on its entity (one fault episode should be one incident).
    incidents = [m.incident for m in scored.matches if m.incident is not None]
    incidents += scored.duplicates
    per_fault = Counter(f.entity for f in faults)
    rooted = Counter(i.root for i in incidents if i.root in per_fault)
    cables = [f for f in faults if f.entity.startswith("link:")]
    line = {
        "scenario": scenario, "seed": seed, "nodes": nodes, "hours": hours, "rate": rate,
        "faults": one["faults"], "incidents": one["incidents"], "f1": one["f1"],
        "ac1": one["overall"]["ac1"], "false_alarms": one["false_alarms"],
        "duplicates": one["duplicates"],
        "false_alarms_per_1000_node_hours": one["false_alarms_per_1000_node_hours"],
        "false_alarm_categories": one["confusion"].get("false_alarm", {}),
        "cables": len(cables), "cable_incidents": sum(rooted[f.entity] for f in cables),
        "ece": one.get("calibration", {}).get("ece"),
    }
    return scored, line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", action="append", help="only these (default: the matrix)")
    parser.add_argument("--seeds", default="21,22")
    parser.add_argument("--nodes", type=int)
    parser.add_argument("--hours", type=float)
    parser.add_argument("--rate", type=float)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    matrix = [m for m in MATRIX if not args.scenario or m[0] in args.scenario]
    if args.scenario:
        matrix += [(s, 64, 12.0, 1.0) for s in args.scenario if s not in {m[0] for m in MATRIX}]
    healthy: list[Scored] = []
    every: list[Scored] = []
    with tempfile.TemporaryDirectory() as tmp:
        for scenario, nodes, hours, rate in matrix:
            nodes, hours, rate = args.nodes or nodes, args.hours or hours, args.rate or rate
            for seed in seeds:
                scored, line = run_one(scenario, seed, nodes, hours, rate, Path(tmp))
                print(json.dumps(line), flush=True)
                every.append(scored)
                if scenario in ("quiet", "migration"):
                    healthy.append(scored)
                (Path(tmp) / f"{scenario}-{seed}.duckdb").unlink()
    pooled = report(every)
    print(json.dumps({
        "pooled": True, "runs": len(every), "f1": pooled["f1"],
        "ac1": pooled["overall"]["ac1"],
        "false_alarms_per_1000_node_hours": pooled["false_alarms_per_1000_node_hours"],
        "healthy_false_alarms_per_1000_node_hours":
            report(healthy)["false_alarms_per_1000_node_hours"] if healthy else None,
        "calibration": pooled.get("calibration"),
    }))


if __name__ == "__main__":
    main()
