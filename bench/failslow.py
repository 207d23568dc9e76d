"""Issue #19's figures: fail-slow kinds, every category in the wide shapes, confounders.

    .venv/bin/python bench/failslow.py                 # seeds 701-705 (no test uses them)
    .venv/bin/python bench/failslow.py --seeds 801 802 --out bench/results/failslow.json

Simulates each run in the embedded mode into a temporary store, analyzes it (the analysis never
reads the truth), scores it with ``fleetlog eval``'s code and pools the runs per part:

- ``failslow``: the fail-slow family (each kind twice per run): per kind recall, precision,
  AC@1, time to detect, the share found within 5 minutes, the job's slowdown then, and the
  issue's goal: of the faults whose job ran 10 % slower, the share found within 5 minutes of
  that, and the time from it to the detection;
- ``wide``: the ``mixed`` scenario (overlapping faults) with symptom shapes drawn from the wide
  ranges: F1, AC@1, per category;
- ``categories``: every category on its own scenario (with random faults on top), wide shapes;
- ``confounders``: ``quiet_confounders`` (no fault, things that look like one): false alarms
  per 1,000 node-hours.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from calibrate import score  # simulate one run into a store, score it, drop the store

from fleetlog.analysis.evaluate import report
from fleetlog.ingest.contract import ALL_CATEGORIES

SEEDS = (701, 702, 703, 704, 705)
# part -> (scenarios, nodes, hours, fault rate, shapes)
PARTS: dict[str, tuple[tuple[str, ...], int, float, float, str]] = {
    "failslow": (("failslow",), 64, 4.0, 1.0, "wide"),
    "wide": (("mixed",), 64, 4.0, 100.0, "wide"),
    "categories": (tuple(ALL_CATEGORIES), 32, 6.0, 5.0, "wide"),
    "confounders": (("quiet_confounders",), 64, 24.0, 1.0, "template"),
}


def summary(part: str, pooled: dict[str, Any]) -> dict[str, Any]:
    keys = ("faults", "incidents", "precision", "recall", "f1", "false_alarms", "duplicates",
            "node_hours", "false_alarms_per_1000_node_hours")
    out: dict[str, Any] = {k: pooled[k] for k in keys}
    out["ac1"] = pooled["overall"]["ac1"]
    out["ttd_median_s"] = pooled["overall"]["ttd_median_s"]
    out["by_kind" if part == "failslow" else "by_category"] = {
        k: {m: v[m] for m in ("faults", "detected", "recall", "precision", "ac1",
                               "ttd_median_s", "ttd_p90_s", "detected_within_5min",
                               "slowdown_at_detect_median", "slowed_10pct",
                               "ttd_from_slowed_median_s", "ttd_from_slowed_p90_s",
                               "detected_within_5min_of_slowed") if m in v}
        for k, v in pooled["by_kind" if part == "failslow" else "by_category"].items()}
    out["wrong_root"] = pooled["wrong_root"][:10]
    out["missed"] = pooled["missed"][:10]
    out["false_alarm_examples"] = pooled["false_alarm_examples"][:10]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=list(PARTS))
    parser.add_argument("--out", type=Path, help="also write the figures here (JSON)")
    args = parser.parse_args()
    figures: dict[str, Any] = {"seeds": args.seeds}
    with tempfile.TemporaryDirectory(prefix="fleetlog-failslow-") as tmp:
        for part in args.parts:
            scenarios, nodes, hours, rate, shapes = PARTS[part]
            started = time.perf_counter()
            runs = [score(scenario, seed, nodes, hours, rate, shapes, Path(tmp))
                    for seed in args.seeds for scenario in scenarios]
            figures[part] = {"scenarios": list(scenarios), "nodes": nodes, "hours": hours,
                             "fault_rate": rate, "shapes": shapes,
                             **summary(part, report(runs)),
                             "wall_s": round(time.perf_counter() - started, 1)}
    text = json.dumps(figures, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
