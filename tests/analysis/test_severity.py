"""Severity follows impact (the table in docs/analysis.md), state follows the last symptom."""

from __future__ import annotations

import pytest

from fleetlog.analysis.severity import (
    CRITICAL_GPUS,
    RESOLVE_AFTER_S,
    SEVERITIES,
    Impact,
    rank,
    severity,
    state,
)

US = 1_000_000


@pytest.mark.parametrize("category, impact, expected", [
    # fatal and wide: many GPUs, many nodes, or several jobs
    ("gpu_hw", Impact(gpus=CRITICAL_GPUS, jobs=1, jobs_failed=1, nodes=1), "critical"),
    ("network", Impact(gpus=256, jobs=17, jobs_failed=17, nodes=32), "critical"),
    ("rack_power", Impact(gpus=48, jobs=2, jobs_failed=2, nodes=2), "critical"),
    # planned work is never paged as critical
    ("host_maintenance", Impact(gpus=512, jobs=3, jobs_failed=3, nodes=1), "warning"),
    # fatal to one small job
    ("gpu_hw", Impact(gpus=32, jobs=1, jobs_failed=1, nodes=1), "warning"),
    # slowed, not failed, even when wide
    ("gpu_thermal", Impact(gpus=1024, jobs=1, jobs_failed=0, nodes=1), "warning"),
    # a wide component with nothing on it yet
    ("cooling", Impact(gpus=32, jobs=0, jobs_failed=0, nodes=4), "warning"),
    # silent corruption: wrong results are never just info
    ("sdc", Impact(), "warning"),
    # nothing affected
    ("gpu_hw", Impact(gpus=1, nodes=1), "info"),
    ("host_maintenance", Impact(gpus=8, nodes=1), "info"),
])
def test_severity_follows_impact(category: str, impact: Impact, expected: str) -> None:
    assert severity(category, impact) == expected


def test_more_impact_is_never_less_severe() -> None:
    levels = [severity("gpu_hw", Impact(gpus=g, jobs=j, jobs_failed=f, nodes=n))
              for g, j, f, n in [(1, 0, 0, 1), (8, 1, 0, 1), (8, 1, 1, 1), (8, 2, 2, 1),
                                 (512, 2, 2, 8)]]
    assert [rank(level) for level in levels] == sorted(
        (rank(level) for level in levels), reverse=True)
    assert SEVERITIES == ("critical", "warning", "info")


def test_an_incident_resolves_after_a_quiet_time_since_its_last_symptom() -> None:
    start, end = 0, 600 * US
    assert state(end, start, end) == "open"
    assert state(end, start, end + int((RESOLVE_AFTER_S - 1) * US)) == "open"
    assert state(end, start, end + int(RESOLVE_AFTER_S * US)) == "resolved"
    assert state(None, start, start + 60 * US) == "open"  # no end known: its start counts
