"""Batch analysis: store -> findings -> incidents (-> stored, published).

``analyze_store`` is what `fleetlog analyze` and `fleetlog eval` run. It reads the public views
only (never ``truth_faults``), for a time window, and is deterministic: the same store and window
give the same incidents, with the same ids.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from fleetlog.analysis.calibration import calibrate
from fleetlog.analysis.context import US, AnalysisContext, Finding, build_context
from fleetlog.analysis.detectors import run_detectors
from fleetlog.analysis.diagnosis import Incident, diagnose
from fleetlog.analysis.projections import Topology
from fleetlog.ingest.kafka.settings import KafkaSettings


@dataclass
class AnalysisResult:
    incidents: list[Incident]
    findings: list[Finding]
    since_us: int | None
    until_us: int | None
    interval_us: int
    timings: dict[str, float] = field(default_factory=dict)
    stored: int = 0
    published: int = 0
    topology: Topology = field(default_factory=Topology)

    def summary(self) -> dict[str, Any]:
        from fleetlog.analysis.incidents import _iso

        return {
            "since": _iso(self.since_us) if self.since_us is not None else None,
            "until": _iso(self.until_us) if self.until_us is not None else None,
            "interval_s": self.interval_us / US,
            "findings": len(self.findings),
            "incidents": len(self.incidents),
            "by_category": dict(sorted(Counter(i.category for i in self.incidents).items())),
            "stored": self.stored,
            "published": self.published,
            "seconds": self.timings,
        }


def analyze_context(
    ctx: AnalysisContext, on_step: Callable[[int], object] | None = None,
    optional: Sequence[str] = (),
) -> AnalysisResult:
    timings: dict[str, float] = {}
    findings = run_detectors(ctx, timings, on_step, optional)
    started = time.perf_counter()
    incidents = [i for i in diagnose(ctx, findings) if i.detect_us >= ctx.since_us]
    calibrate(incidents)
    timings["diagnosis"] = round(time.perf_counter() - started, 3)
    return AnalysisResult(incidents, findings, ctx.since_us, ctx.until_us, ctx.interval_us,
                          timings, topology=ctx.projections.topology)


def analyze_store(
    con: duckdb.DuckDBPyConnection, since_us: int | None = None, until_us: int | None = None,
    *, progress: Callable[[str], Any] | None = None,
    on_step: Callable[[int], object] | None = None, optional: Sequence[str] = (),
) -> AnalysisResult:
    """Analyze the store behind ``con`` over ``[since, until)`` (default: all of it).

    ``on_step(n)`` is called after each of the ``len(DETECTORS)`` detectors (progress bars).
    ``optional`` names detectors off by default to run too (``OPTIONAL_DETECTORS``)."""
    started = time.perf_counter()
    ctx = build_context(con, since_us, until_us)
    if ctx is None:
        return AnalysisResult([], [], since_us, until_us, 10 * US)
    load_s = time.perf_counter() - started
    if progress:
        progress(f"projections built in {load_s:.1f} s; running detectors")
    result = analyze_context(ctx, on_step, optional)
    result.timings = {"projections": round(load_s, 3), **result.timings,
                      "total": round(time.perf_counter() - started, 3)}
    return result


def run_analysis(
    paths: Sequence[str | Path], *, since_us: int | None = None, until_us: int | None = None,
    write: bool = True, publish_to: KafkaSettings | None = None,
    topic_prefix: str | None = None, progress: Callable[[str], Any] | None = None,
    on_step: Callable[[int], object] | None = None,
    on_result: Callable[[duckdb.DuckDBPyConnection, AnalysisResult], Any] | None = None,
    optional: Sequence[str] = (),
) -> dict[str, Any]:
    """`fleetlog analyze` (batch): analyze, store the incidents (one store file), publish them
    (when a broker is given), and return the summary plus the incidents. ``on_result`` sees the
    result with the store still open, after the incidents are stored (``analyze
    --alertmanager`` sends them from there)."""
    from fleetlog.analysis.incidents import (
        incident_row,
        open_for_results,
        publish_incidents,
        store_incidents,
    )

    con = open_for_results(paths, write)
    try:
        result = analyze_store(con, since_us, until_us, progress=progress, on_step=on_step,
                               optional=optional)
        if write:
            result.stored = store_incidents(con, result.incidents)
        if on_result is not None:
            on_result(con, result)
    finally:
        con.close()
    if publish_to is not None:
        result.published = publish_incidents(publish_to, result.incidents, topic_prefix)
    return {**result.summary(), "opened": [incident_row(i) for i in result.incidents]}
