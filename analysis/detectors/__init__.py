"""Detectors: each reads one kind of signal from the store's views and returns findings.

A detector is a function ``(AnalysisContext) -> list[Finding]``; its module docstring says which
signal it reads and why. ``DETECTORS`` runs them in a fixed order so results are deterministic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

from fleetlog.analysis.context import AnalysisContext, Finding
from fleetlog.analysis.detectors.gpu import detect_gpu_counters, detect_presence
from fleetlog.analysis.detectors.host import detect_host_events
from fleetlog.analysis.detectors.job_parts import detect_job_parts
from fleetlog.analysis.detectors.jobs import (
    detect_job_failures,
    detect_loss,
    detect_slow_checkpoints,
    detect_stalls,
    detect_stragglers,
)
from fleetlog.analysis.detectors.learned import detect_learned
from fleetlog.analysis.detectors.network import detect_ports
from fleetlog.analysis.detectors.peers import detect_peers
from fleetlog.analysis.detectors.port_rates import detect_port_rates
from fleetlog.analysis.detectors.rail_rates import detect_rail_rates
from fleetlog.analysis.detectors.thermal import detect_thermal
from fleetlog.analysis.detectors.xid import detect_xids

Detector = Callable[[AnalysisContext], list[Finding]]

DETECTORS: Final[dict[str, Detector]] = {
    "xid": detect_xids,
    "host": detect_host_events,
    "presence": detect_presence,
    "gpu_counters": detect_gpu_counters,
    "thermal": detect_thermal,
    "ports": detect_ports,
    "peers": detect_peers,
    "port_rates": detect_port_rates,
    "rail_rates": detect_rail_rates,
    "job_failures": detect_job_failures,
    "stalls": detect_stalls,
    "loss": detect_loss,
    "stragglers": detect_stragglers,
    "job_parts": detect_job_parts,
    "checkpoints": detect_slow_checkpoints,
}
# Off by default, run when asked (`analyze --learned`): docs/analysis.md#learned-detector
# gives the evaluation that keeps the learned detector out of the default list.
OPTIONAL_DETECTORS: Final[dict[str, Detector]] = {"learned": detect_learned}


def run_detectors(
    ctx: AnalysisContext, timings: dict[str, float] | None = None,
    on_step: Callable[[int], object] | None = None, optional: Sequence[str] = (),
) -> list[Finding]:
    """Every detector's findings (the defaults, then the ``optional`` ones named), sorted by
    detection time (then entity, kind)."""
    import time

    chosen = {**DETECTORS, **{name: OPTIONAL_DETECTORS[name] for name in optional}}
    findings: list[Finding] = []
    for done, (name, detector) in enumerate(chosen.items(), start=1):
        started = time.perf_counter()
        findings.extend(detector(ctx))
        if timings is not None:
            timings[name] = round(time.perf_counter() - started, 3)
        if on_step is not None:
            on_step(done)
    return sorted(findings, key=lambda f: (f.detect_us, f.entity, f.kind, f.onset_us))
