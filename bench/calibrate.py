"""Fit the confidence calibration (``analysis/calibration.json``) on simulated runs.

    .venv/bin/python bench/calibrate.py            # fit, print the table and the reliability
    .venv/bin/python bench/calibrate.py --write    # ... and write analysis/calibration.json

Runs every scenario (``RUNS``) on the calibration seeds (``CALIBRATION_SEEDS``, reserved: no test
or evaluation figure uses them) in the embedded mode, analyzes each run, matches its incidents to
the injected faults, and fits, per category and band of the raw score, the share of incidents
that were right (``analysis.calibration.fit``). Then it scores the held-out seed
(``HELD_OUT_SEED``) with the new table and prints its reliability table and ECE. Rerun it after
changing a detector or the diagnosis (a few minutes on two cores).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from fleetlog.analysis import calibration
from fleetlog.analysis.evaluate import Scored, report, score_store
from fleetlog.generators.config import SimConfig
from fleetlog.generators.run import simulate
from fleetlog.ingest.contract import ALL_CATEGORIES
from fleetlog.ingest.store import open_store

# (scenario, nodes, hours, fault rate, shapes): every category on its scenario (with random
# faults on top) in the template shape and in shapes drawn from the documented wide ranges
# (docs/faults.md#symptom-shapes: faults shaped unlike the template are found later or rooted
# elsewhere, and the confidence must say so), the calibrated mix, overlapping faults, and the
# healthy runs, with and without confounders (their false alarms count), and the fail-slow
# family (parts slower than their peers, no error counter naming them).
RUNS = (
    *((category, 32, 6.0, 5.0, "template") for category in ALL_CATEGORIES),
    *((category, 32, 6.0, 5.0, "wide") for category in ALL_CATEGORIES),
    ("llama3", 64, 12.0, 20.0, "template"),
    ("llama3", 64, 12.0, 20.0, "wide"),
    ("mixed", 64, 4.0, 100.0, "template"),
    ("mixed", 64, 4.0, 100.0, "wide"),
    ("failslow", 64, 4.0, 1.0, "wide"),  # every fail-slow kind twice (issue #19)
    ("quiet", 64, 12.0, 1.0, "template"),
    ("quiet_confounders", 64, 12.0, 1.0, "template"),
    ("migration", 64, 12.0, 1.0, "template"),
)


def score(scenario: str, seed: int, nodes: int, hours: float, rate: float, shapes: str,
          folder: Path) -> Scored:
    db = folder / f"{scenario}-{shapes}-{seed}.duckdb"
    simulate(SimConfig(nodes=nodes, hours=hours, seed=seed, scenario=scenario,
                       fault_rate=rate, shapes=shapes), f"duckdb:{db}")
    con = open_store(db)
    try:
        return score_store(con)
    finally:
        con.close()
        db.unlink()


def samples(scored: Scored) -> list[tuple[str, float, bool]]:
    """(calibration key: category and root kind, raw score, right?) of every incident of a
    scored run."""
    out = [(calibration.key(m.incident.category, m.incident.root), m.incident.candidates[0][2],
            (m.incident.category, m.incident.root) == (m.fault.category, m.fault.entity))
           for m in scored.matches if m.incident is not None and m.incident.candidates]
    out += [(calibration.key(i.category, i.root), i.candidates[0][2], False)
            for i in scored.false_alarms + scored.duplicates if i.candidates]
    return out


def held_out(folder: Path, seed: int = calibration.HELD_OUT_SEED) -> dict[str, object]:
    """The reliability table and ECE of the held-out runs, with the table in use."""
    runs = [score(s, seed, n, h, r, shapes, folder)
            for s, n, h, r, shapes in calibration.HELD_OUT_RUNS]
    return dict(report(runs)["calibration"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help="write analysis/calibration.json")
    args = parser.parse_args()
    started = time.perf_counter()
    rows: list[tuple[str, float, bool]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in calibration.CALIBRATION_SEEDS:
            for scenario, nodes, hours, rate, shapes in RUNS:
                rows += samples(score(scenario, seed, nodes, hours, rate, shapes, Path(tmp)))
        table = calibration.fit(rows)
        print(json.dumps({"incidents": len(rows), "right": sum(ok for *_x, ok in rows),
                          "raw": calibration.reliability((raw, ok) for _c, raw, ok in rows)}))
        if args.write:
            path = Path(calibration.__file__).with_name("calibration.json")
            path.write_text(json.dumps({
                "fitted_by": "bench/calibrate.py --write",
                "seeds": list(calibration.CALIBRATION_SEEDS),
                "incidents": len(rows),
                "raw_edges": list(calibration.RAW_EDGES),
                "categories": table,
            }, indent=1) + "\n")
            calibration.load_table.cache_clear()
        print(json.dumps({"table": table}))
        print(json.dumps({"held_out_seed": calibration.HELD_OUT_SEED,
                          "calibration": held_out(Path(tmp)),
                          "seconds": round(time.perf_counter() - started, 1)}))


if __name__ == "__main__":
    main()
