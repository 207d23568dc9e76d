"""The learned detector: parts that depart from their peers, scored by an isolation forest.

Reads the peer-relative window features of ``analysis.features`` (GPU against its node's GPUs,
node against its job's nodes, port against its node's ports) and scores each table with a
scikit-learn model fitted at analysis time on that table itself — unsupervised, like Minder: no
truth, no labels, no artifact to go stale. A part is flagged when the model calls its window an
outlier in ``PERSIST`` consecutive windows; the finding names the part and carries the features
that made the score (``attrs["features"]``: the robust z-scores, largest first).

Why an isolation forest (and not local outlier factor or robust covariance):
- the features are one-sided robust z-scores, mostly exactly zero, with a long tail: robust
  covariance (MinCovDet) assumes an elliptical bulk and its covariance goes singular on columns
  that are zero in most rows; the forest makes no distributional assumption;
- cost: LOF needs neighbour searches over millions of rows (a 2,048-node day is ~12 M GPU
  windows); a forest fits on a fixed subsample (``max_samples``) and scores in linear time;
- its threshold has a meaning independent of the data size: ``contamination="auto"`` keeps the
  original paper's cut (anomaly score 0.5, path length equal to the average), so no contamination
  rate is tuned to a scenario.

Cost: the forest is fitted on at most ``FIT_ROWS`` rows (drawn with ``RANDOM_STATE``) and only
rows with some feature at or beyond ``CANDIDATE_Z`` are scored: a row whose every feature is
within the peers' usual spread cannot be an outlier of a model fitted on this bulk, and scoring
the bulk would cost more than the rest of the analysis.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import polars as pl

from fleetlog.analysis.context import US, AnalysisContext, Finding
from fleetlog.analysis.features import (
    GPU_FEATURES,
    NODE_FEATURES,
    PORT_FEATURES,
    WINDOW_S,
    gpu_features,
    node_features,
    port_features,
)
from fleetlog.ingest import contract as c

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

RANDOM_STATE: Final = 19
FIT_ROWS: Final = 50_000
CANDIDATE_Z: Final = 3.0
Z_CAP: Final = 50.0  # beyond this a z-score says nothing more (and would stretch the trees)
PERSIST: Final = 2  # consecutive outlier windows before a part is flagged
GAP_WINDOWS: Final = 2  # outlier windows this close belong to one finding


def _cap(x: np.ndarray) -> np.ndarray:
    capped: np.ndarray = np.clip(x, 0.0, Z_CAP)
    return capped


def build_model(random_state: int = RANDOM_STATE) -> Pipeline:
    """The scorer: cap the z-scores, then an isolation forest (``contamination="auto"``)."""
    # Imported here: scikit-learn takes 0.7 s to import, and the learned detector is off by
    # default; every other command (and every analysis without it) starts that much sooner.
    from sklearn.ensemble import IsolationForest
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    return Pipeline([
        ("cap", FunctionTransformer(_cap)),
        ("forest", IsolationForest(n_estimators=100, max_samples="auto", contamination="auto",
                                   random_state=random_state)),
    ])


def outlier_rows(frame: pl.DataFrame, features: Sequence[str],
                 random_state: int = RANDOM_STATE) -> pl.DataFrame:
    """The rows of ``frame`` the model (fitted on ``frame`` itself) calls outliers, with
    their ``score`` (``score_samples``: lower is more anomalous)."""
    if frame.is_empty():
        return frame.with_columns(pl.lit(0.0).alias("score")).clear()
    x = frame.select(features).to_numpy().astype(np.float64)
    rng = np.random.default_rng(random_state)
    fit_x = x if len(x) <= FIT_ROWS else x[rng.choice(len(x), FIT_ROWS, replace=False)]
    model = build_model(random_state).fit(fit_x)
    candidates = np.flatnonzero((x >= CANDIDATE_Z).any(axis=1))
    if candidates.size == 0:
        return frame.with_columns(pl.lit(0.0).alias("score")).clear()
    scores = model.score_samples(x[candidates])
    forest = model.named_steps["forest"]
    outlier = scores < float(forest.offset_)
    flagged: pl.DataFrame = frame[candidates[outlier]].with_columns(
        pl.Series("score", scores[outlier], dtype=pl.Float64))
    return flagged


def _episodes(buckets: np.ndarray) -> list[tuple[int, int, int]]:
    """(first, detect, last) indices into the sorted outlier windows ``buckets`` of one part:
    runs whose windows are at most ``GAP_WINDOWS`` apart, kept when ``PERSIST`` of them are
    consecutive; ``detect`` is the window that completes the first such streak."""
    out: list[tuple[int, int, int]] = []
    start, streak, detect = 0, 0, -1
    for i, bucket in enumerate(buckets):
        step = int(bucket - buckets[i - 1]) if i else 0
        if i and step > GAP_WINDOWS:
            if detect >= 0:
                out.append((start, detect, i - 1))
            start, streak, detect = i, 0, -1
        streak = streak + 1 if step == 1 else 1
        if detect < 0 and streak >= PERSIST:
            detect = i
    if detect >= 0:
        out.append((start, detect, len(buckets) - 1))
    return out


def _evidence(row: dict[str, Any], features: Sequence[str]) -> dict[str, float]:
    ranked = sorted(((f, float(row[f])) for f in features if float(row[f]) > 0),
                    key=lambda x: -x[1])
    return {name: round(z, 2) for name, z in ranked[:4]}


def _findings(flagged: pl.DataFrame, keys: list[str], features: Sequence[str], kind: str,
              make: Callable[[dict[str, Any]], tuple[str, dict[str, Any]]]) -> list[Finding]:
    findings: list[Finding] = []
    if flagged.is_empty():
        return findings
    for key, part in flagged.sort([*keys, "bucket"]).group_by(keys, maintain_order=True):
        rows = part.to_dicts()
        buckets = part["bucket"].to_numpy()
        for first, detect, last in _episodes(buckets):
            worst = min(rows[first:last + 1], key=lambda r: float(r["score"]))
            named = dict(zip(keys, key, strict=True))
            entity, attrs = make(named)
            evidence = _evidence(worst, features)
            what = ", ".join(f"{k} {v:.1f}" for k, v in evidence.items())
            findings.append(Finding(
                kind=kind, entity=entity, onset_us=int(rows[first]["last_us"]),
                detect_us=int(rows[detect]["last_us"]), end_us=int(rows[last]["last_us"]),
                text=f"{entity} departs from its peers for {last - first + 1} of "
                     f"{int(buckets[last] - buckets[first]) + 1} windows of {WINDOW_S} s "
                     f"(isolation forest score {float(worst['score']):.2f}; robust z: {what})",
                attrs={**attrs, "features": evidence, "score": round(float(worst["score"]), 4),
                       "windows": last - first + 1},
            ))
    return findings


def _gpu_entity(k: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return c.gpu_entity(str(k["node"]), int(k["gpu"])), {"node": str(k["node"])}


def _node_entity(k: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return c.node_entity(str(k["node"])), {"node": str(k["node"])}


def _port_entity(k: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return (c.link_entity(str(k["switch"]), int(k["port"])),
            {"switch": str(k["switch"]), "node": str(k["node"]), "peer": str(k["nic"])})


def detect_learned(ctx: AnalysisContext) -> list[Finding]:
    """GPU, node and port outliers against their peers (``gpu_outlier``, ``node_outlier``,
    ``port_outlier``)."""
    findings = _findings(outlier_rows(gpu_features(ctx), GPU_FEATURES), ["node", "gpu"],
                         GPU_FEATURES, "gpu_outlier", _gpu_entity)
    findings += _findings(outlier_rows(node_features(ctx), NODE_FEATURES), ["node"],
                          NODE_FEATURES, "node_outlier", _node_entity)
    ports = port_features(ctx)
    if not ports.is_empty():
        findings += _findings(outlier_rows(ports, PORT_FEATURES), ["switch", "port", "node", "nic"],
                              PORT_FEATURES, "port_outlier", _port_entity)
    return [f for f in findings if f.detect_us >= ctx.since_us - WINDOW_S * US]
