"""Daly's published cases (docs/design.md#checkpoint-math) and Young's formula."""

from __future__ import annotations

import math

import pytest

from fleetlog.analysis.checkpoint import (
    daly_interval,
    expected_loss_fraction,
    job_mtbf_s,
    young_interval,
)

MIN = 60.0
HOUR = 3600.0


@pytest.mark.parametrize(("mtbf_s", "expected_min", "tolerance_min"), [
    (24 * HOUR, 117.0, 1.0),
    (6 * HOUR, 57.0, 1.0),
    (15 * MIN, 9.1, 0.1),
])
def test_dalys_published_cases(mtbf_s: float, expected_min: float, tolerance_min: float) -> None:
    assert daly_interval(5 * MIN, mtbf_s) / MIN == pytest.approx(expected_min, abs=tolerance_min)


def test_young_is_the_first_order_term() -> None:
    assert young_interval(5 * MIN, 24 * HOUR) == pytest.approx(math.sqrt(2 * 300 * 86400))
    assert daly_interval(5 * MIN, 24 * HOUR) < young_interval(5 * MIN, 24 * HOUR)


def test_checkpoint_longer_than_twice_mtbf_means_checkpoint_every_mtbf() -> None:
    assert daly_interval(3 * HOUR, 1 * HOUR) == 1 * HOUR


def test_bigger_jobs_fail_more_often() -> None:
    assert job_mtbf_s(200 * 86400.0, 2048) == pytest.approx(200 * 86400 / 2048)
    with pytest.raises(ValueError):
        job_mtbf_s(1.0, 0)


def test_daly_minimises_the_expected_loss() -> None:
    delta, mtbf = 5 * MIN, 6 * HOUR
    best = daly_interval(delta, mtbf)
    at_best = expected_loss_fraction(best, delta, 0.0, mtbf)
    for factor in (0.5, 2.0):
        assert expected_loss_fraction(best * factor, delta, 0.0, mtbf) > at_best


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="positive"):
        daly_interval(0, 10)
