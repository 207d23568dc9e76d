"""Confidence that is true: an incident's raw score (its top candidate's share of the ranking)
mapped to the share of such incidents that were right on simulated runs.

The table (``calibration.json``, package data) holds, per category, the observed precision in a
few bands of the raw score, fitted by ``bench/calibrate.py`` on simulated runs whose seeds are
reserved for calibration (``CALIBRATION_SEEDS``; the tests and the evaluation figures use
others). An incident is right when evaluation matches it to an injected fault whose category and
root entity are the incident's. Refit after changing a detector or the diagnosis:

    .venv/bin/python bench/calibrate.py --write

A category the table does not know keeps its raw score.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from functools import cache
from importlib import resources
from typing import Any, Final

from fleetlog.analysis.diagnosis import Incident

CALIBRATION_SEEDS: Final = (501, 502, 503)  # the figures of docs/analysis.md use 101-401
HELD_OUT_SEED: Final = 601  # the calibration test's: neither fitted on nor used elsewhere
# The held-out check (bench/calibrate.py and tests/analysis/test_honest_runs.py): (scenario,
# nodes, hours, fault rate), overlapping faults, flapping cables and the calibrated mix.
# (scenario, nodes, hours, fault rate, shapes): the template and the wide shapes, confounders,
# and the fail-slow family (issue #19)
HELD_OUT_RUNS: Final = (
    ("mixed", 64, 6.0, 150.0, "template"), ("network", 64, 8.0, 60.0, "wide"),
    ("llama3", 128, 6.0, 150.0, "wide"), ("quiet_confounders", 64, 12.0, 1.0, "template"),
    ("failslow", 64, 4.0, 1.0, "wide"))
MAX_ECE: Final = 0.05
# Upper edges of the raw-score bands (the last band ends at 1.0).
RAW_EDGES: Final = (0.6, 0.8, 0.9, 1.0)
# Reliability bands of the calibrated confidence (eval's table and ECE).
BANDS: Final = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
PRIOR_WEIGHT: Final = 4.0  # pseudo-incidents pulling a thin band toward its category's precision


@cache
def load_table() -> dict[str, list[float]]:
    """Category -> calibrated confidence per raw-score band (``RAW_EDGES``)."""
    text = resources.files("fleetlog.analysis").joinpath("calibration.json").read_text()
    table: dict[str, Any] = json.loads(text)
    return {str(k): [float(x) for x in v] for k, v in table["categories"].items()}


def band_of(raw: float, edges: Sequence[float] = RAW_EDGES) -> int:
    for i, edge in enumerate(edges):
        if raw <= edge or i == len(edges) - 1:
            return i
    return len(edges) - 1


def key(category: str, root: str) -> str:
    """What the table is kept by: the category and the kind of its root entity. A dead leaf
    switch and a cable with a few symbol errors are both ``network``, and are not equally often
    right; one figure for both would make the one too sure and the other too shy."""
    return f"{category}/{root.partition(':')[0]}"


def calibrated(category: str, raw: float, root: str | None = None) -> float:
    """The table's figure for the incident's category and root kind, else for its category
    (a root kind the fit never saw), else the raw score (a category it never saw)."""
    table = load_table()
    bands = (table.get(key(category, root)) if root else None) or table.get(category)
    return raw if not bands else bands[band_of(raw)]


def calibrate(incidents: Iterable[Incident]) -> None:
    """Set each incident's confidence from the table (its raw score stays in its candidates)."""
    for incident in incidents:
        if incident.candidates:
            incident.calibrated = calibrated(incident.category, incident.candidates[0][2],
                                             incident.root)


def fit(samples: Iterable[tuple[str, float, bool]]) -> dict[str, list[float]]:
    """(key, raw score, right?) -> the table: per band, the share right, shrunk toward the key's
    share (itself shrunk toward the pooled one) by ``PRIOR_WEIGHT`` pseudo-incidents, and never
    rising as the raw score falls (bands are made monotone). A key ``category/root kind``
    (``key``) also counts toward its category's own row, the fallback for unseen root kinds."""
    rows = list(samples)
    rows += [(cat.partition("/")[0], raw, ok) for cat, raw, ok in rows if "/" in cat]
    keyed = [row for row in rows if "/" in row[0]] or rows  # each incident once
    pooled = (sum(ok for *_x, ok in keyed) + 1) / (len(keyed) + 2)
    table: dict[str, list[float]] = {}
    for category in sorted({cat for cat, _r, _ok in rows}):
        mine = [(raw, ok) for cat, raw, ok in rows if cat == category]
        prior = (sum(ok for _r, ok in mine) + PRIOR_WEIGHT * pooled) / (len(mine) + PRIOR_WEIGHT)
        bands = []
        for i in range(len(RAW_EDGES)):
            inside = [ok for raw, ok in mine if band_of(raw) == i]
            bands.append((sum(inside) + PRIOR_WEIGHT * prior) / (len(inside) + PRIOR_WEIGHT))
        for i in range(len(bands) - 2, -1, -1):  # monotone: a lower raw score is never surer
            bands[i] = min(bands[i], bands[i + 1])
        table[category] = [round(b, 4) for b in bands]
    return table


def reliability(samples: Iterable[tuple[float, bool]]) -> dict[str, Any]:
    """(confidence, right?) -> per band of confidence: incidents, mean confidence, share right;
    and the expected calibration error (ECE: the incident-weighted mean gap between the two)."""
    rows = list(samples)
    table = []
    gap = 0.0
    lo = 0.0
    for hi in BANDS:
        inside = [(conf, ok) for conf, ok in rows
                  if lo < conf <= hi or (lo == 0.0 and conf == 0.0)]
        lo_band = lo
        lo = hi
        if not inside:
            continue
        mean_conf = sum(conf for conf, _ok in inside) / len(inside)
        share = sum(ok for _c, ok in inside) / len(inside)
        gap += len(inside) * abs(mean_conf - share)
        table.append({"band": f"{lo_band:.2f}-{hi:.2f}", "incidents": len(inside),
                      "mean_confidence": round(mean_conf, 4), "share_correct": round(share, 4)})
    return {"bands": table, "incidents": len(rows),
            "ece": round(gap / len(rows), 4) if rows else None}
