"""What-if replay of checkpoint/restart policies on recorded failures."""

from __future__ import annotations

import pytest

from fleetlog.analysis.whatif import FailureRecord, JobRecord, evaluate, replay_job, replay_losses

HOUR = 3600.0


def _job(failures: tuple[FailureRecord, ...], *, gpus: int = 1024) -> JobRecord:
    return JobRecord(job="j", gpus=gpus, wall_s=48 * HOUR, checkpoint_s=120.0, restart_s=600.0,
                     failures=failures)


def test_no_failures_costs_only_checkpoints() -> None:
    lost, ckpt, restarts = replay_job(_job(()), "baseline", mtbf_s=10 * HOUR)
    assert (lost, restarts) == (0.0, 0)
    assert ckpt == pytest.approx(int(48 * HOUR // (HOUR + 120)) * 120)


def test_crash_loses_work_since_the_last_checkpoint_plus_restart() -> None:
    failure = FailureRecord(at_s=HOUR + 120 + 1800)  # 30 min after the first checkpoint
    lost, _ckpt, restarts = replay_job(_job((failure,)), "baseline", mtbf_s=10 * HOUR)
    assert restarts == 1
    assert lost == pytest.approx(1800 + 600)


def test_a_hang_costs_the_watchdog_unless_fleetlog_detects_it() -> None:
    hang = FailureRecord(at_s=600, implicit=True, detected_after_s=20)
    base, _c, _r = replay_job(_job((hang,)), "baseline", mtbf_s=10 * HOUR, watchdog_s=1800)
    ours, _c, _r = replay_job(_job((hang,)), "fleetlog", mtbf_s=10 * HOUR, watchdog_s=1800)
    assert base == pytest.approx(600 + 1800 + 600)
    assert ours == pytest.approx(600 + 20 + 600)


def test_an_early_warning_saves_the_work() -> None:
    warned = FailureRecord(at_s=2000, warned_before_s=900)
    ours, _c, _r = replay_job(_job((warned,)), "fleetlog", mtbf_s=10 * HOUR)
    # Checkpoint-now finishes 120 s after the warning; 780 s of work remain at risk.
    assert ours == pytest.approx(780 + 600)


def test_oracle_bounds_every_policy() -> None:
    failures = tuple(FailureRecord(at_s=h * HOUR + 1234, implicit=h % 3 == 0,
                                   detected_after_s=30.0) for h in range(2, 46, 4))
    results = {r.policy: r for r in evaluate([_job(failures)])}
    assert results["oracle"].ettr >= results["fleetlog"].ettr >= results["baseline"].ettr
    assert results["daly"].ettr >= results["baseline"].ettr
    assert all(r.restarts == len(failures) for r in results.values())


def test_unknown_policy() -> None:
    with pytest.raises(ValueError, match="unknown policy"):
        replay_job(_job(()), "yolo", mtbf_s=HOUR)


def test_losses_split_into_rework_notice_and_restart() -> None:
    hang = FailureRecord(at_s=600, implicit=True, detected_after_s=20, wait_s=900)
    base = replay_losses(_job((hang,)), "baseline", mtbf_s=10 * HOUR, watchdog_s=1800)
    assert (base.rework_s, base.notice_s, base.restart_s) == (600, 1800, 600 + 900)
    assert base.lost_s == 600 + 1800 + 1500


def test_fleetlog_sets_its_interval_from_the_failures_no_warning_covered() -> None:
    """Four failures in 48 h of a 128-node job; one was warned 15 min ahead (a checkpoint-now
    covers it), so periodic checkpoints are sized for three: Daly's interval for a longer MTBF."""
    from fleetlog.analysis.checkpoint import daly_interval

    failures = (FailureRecord(at_s=5 * HOUR), FailureRecord(at_s=17 * HOUR),
                FailureRecord(at_s=29 * HOUR, warned_before_s=900),
                FailureRecord(at_s=41 * HOUR))
    job = _job(failures)
    results = {r.policy: r for r in evaluate([job], ("daly", "fleetlog"))}
    node_seconds = 48 * HOUR * 128
    assert results["daly"].per_job[0]["interval_s"] == pytest.approx(
        daly_interval(120.0, node_seconds / 4 / 128))
    assert results["fleetlog"].per_job[0]["interval_s"] == pytest.approx(
        daly_interval(120.0, node_seconds / 3 / 128))
    # A warning too short for the checkpoint to complete covers nothing.
    late = (*failures[:2], FailureRecord(at_s=29 * HOUR, warned_before_s=60), failures[3])
    [fleetlog] = evaluate([_job(late)], ("fleetlog",))
    assert fleetlog.per_job[0]["interval_s"] == pytest.approx(
        daly_interval(120.0, node_seconds / 4 / 128))


def test_expected_periodic_loss_follows_youngs_square_root() -> None:
    """Checkpoint writes plus half an interval redone per failure: about sqrt(2 δ / M) of the
    time when δ is small against M (Young), so 4x faster checkpoints halve it."""
    from fleetlog.analysis.whatif import checkpoint_speedup_for, expected_periodic_loss

    job = _job((), gpus=1024)  # 128 nodes, δ = 120 s
    node_mtbf = 128 * 10 * HOUR  # the job fails every 10 h
    loss = expected_periodic_loss([job], node_mtbf)
    assert loss == pytest.approx((2 * 120 / (10 * HOUR)) ** 0.5, rel=0.05)
    assert expected_periodic_loss([job], node_mtbf, speedup=4.0) == pytest.approx(loss / 2,
                                                                                 rel=0.05)
    assert checkpoint_speedup_for([job], node_mtbf, loss / 2) == pytest.approx(4.0, rel=0.05)
    assert checkpoint_speedup_for([job], node_mtbf, loss * 2) == 1.0
    assert checkpoint_speedup_for([job], node_mtbf, 1e-9) is None


def test_expected_periodic_loss_weighs_jobs_by_gpu_time() -> None:
    from fleetlog.analysis.whatif import expected_periodic_loss

    small, large = _job((), gpus=8), _job((), gpus=4096)
    node_mtbf = 1000 * HOUR
    both = expected_periodic_loss([small, large], node_mtbf)
    alone = [expected_periodic_loss([j], node_mtbf) for j in (small, large)]
    assert both == pytest.approx((alone[0] * 8 + alone[1] * 4096) / (8 + 4096))
    assert alone[0] < alone[1]  # a larger job fails more often: more checkpoints, more rework


def test_expected_costs_say_when_no_failure_measured_the_mtbf() -> None:
    from fleetlog.analysis.whatif_data import expected_costs

    quiet = expected_costs([_job(())], 2.0)
    assert "30 days" in quiet["note"] and quiet["periodic_loss_points"] > 0
    assert "note" not in expected_costs([_job((FailureRecord(at_s=HOUR),))], 2.0)
