"""Fit repair times on the real fault trace (InfiniteHBD: 584 node faults, 400 servers, 345 days).

    .venv/bin/python bench/repair_times.py   # --trace PATH for another copy of the trace

Pairs each node's ``fault_start`` with its next ``fault_end`` (time out of service, hours), maps
the operators' labels to fleetlog's categories (``CATEGORY_OF``), and fits a lognormal per
category with at least ``MIN_FAULTS`` faults (the others share the fit of all faults). Prints one
JSON line per category (n, median, mean, p90 and the lognormal's mu, sigma of ln hours) and the
``REPAIR_LOGNORMAL`` literal that ``generators/faults.py`` holds; ``analysis/capacity.py``'s
``DEFAULT_REPAIR_S`` is the median of all faults. Rerun it if the trace changes.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

TRACE = Path(__file__).resolve().parents[2] / "shared/data/faults/infinitehbd/fault_trace.json"
MIN_FAULTS = 20

# The trace's (Class, Desc) labels -> fleetlog's fault categories (docs/design.md). Labels that
# name no part (Unknown Error, Stress Test Failure, Suspect Machine Offline...) count only in the
# pooled fit.
CATEGORY_OF = {
    ("GPU", "GPU DBE(Double Bit ECC) > Threshold"): "gpu_hbm",
    ("GPU", "GPU SBE(Single Bit ECC) > Threshold"): "gpu_hbm",
    ("GPU", "GPU Temperature High"): "gpu_thermal",
    ("GPU", "Silent Data Corruption"): "sdc",
    "GPU": "gpu_hw",
    "Parameter Plane Cable": "network",
    "Change": "network",
    "NIC": "nic",
    "Power Supply": "host_hw", "Fan": "host_hw", "Motherboard": "host_hw",
    "Motherboard Battery": "host_hw", "CPU": "host_hw", "RAID Card": "host_hw",
    "Riser Card": "host_hw",
    "File System": "host_maintenance", "Operating System": "host_maintenance",
    "Firmware": "host_maintenance", "Software Tool": "host_maintenance",
}


def repairs(trace: list[dict[str, Any]]) -> list[tuple[str, float]]:
    """(category or "", hours out of service) per fault with a start and an end."""
    open_at: dict[str, list[dict[str, Any]]] = defaultdict(list)
    out = []
    for event in sorted(trace, key=lambda e: e["event_time"]):
        if event["event_type"] == "fault_start":
            open_at[event["node_id"]].append(event)
        elif open_at[event["node_id"]]:
            start = open_at[event["node_id"]].pop(0)
            label = start["fault_type"]
            category = CATEGORY_OF.get((label["Class"], label["Desc"])) or CATEGORY_OF.get(
                label["Class"], "")
            out.append((category, (event["event_time"] - start["event_time"]) * 24.0))
    return out


def fit(hours: list[float]) -> dict[str, float]:
    logs = [math.log(max(h, 0.05)) for h in hours]
    ordered = sorted(hours)
    return {
        "n": len(hours), "median_h": round(statistics.median(hours), 1),
        "mean_h": round(statistics.fmean(hours), 1),
        "p90_h": round(ordered[int(0.9 * (len(ordered) - 1))], 1),
        "mu": round(statistics.fmean(logs), 3), "sigma": round(statistics.pstdev(logs), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trace", type=Path, default=TRACE)
    args = parser.parse_args()
    pairs = repairs(json.loads(args.trace.read_text()))
    pooled = fit([h for _c, h in pairs])
    print(json.dumps({"category": "all", **pooled}))
    table = {}
    for category in sorted({c for c, _h in pairs if c}):
        hours = [h for c, h in pairs if c == category]
        one = fit(hours)
        print(json.dumps({"category": category, **one,
                          "fitted": len(hours) >= MIN_FAULTS}))
        if len(hours) >= MIN_FAULTS:
            table[category] = (one["mu"], one["sigma"])
    table["*"] = (pooled["mu"], pooled["sigma"])
    print("REPAIR_LOGNORMAL = " + json.dumps(table))


if __name__ == "__main__":
    main()
