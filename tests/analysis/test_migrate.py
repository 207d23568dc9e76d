"""Migrate a failed job to another virtual cluster when its own lacks healthy nodes.

A hand-built store (``vc_fleet``): one GPU incident and the job failure it explains. No
generator: capacity must come from events.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from vc_fleet import T0, Fleet, S, node_name

from fleetlog.analysis.capacity import DEFAULT_REPAIR_S
from fleetlog.analysis.job_actions import job_actions
from fleetlog.analysis.whatif import MIGRATE_S, evaluate
from fleetlog.analysis.whatif_data import load_records
from fleetlog.ingest import contract as c
from fleetlog.ingest.store import open_store


def _actions(db: Path) -> list[tuple[str, str, str, float]]:
    con = open_store(db, read_only=True)
    try:
        return [(a.target, a.action, a.reason, a.gpu_hours_saved) for a in job_actions(con)
                if a.action in ("migrate_job", "restart_from_checkpoint")]
    finally:
        con.close()


def _full_vc0(fleet: Fleet) -> None:
    """vc0 is fully used (the spare too): a 4-node job and a 2-node one."""
    fleet.job("big", [1, 2, 3, 4], "vc0")
    fleet.job("other", [5, 6], "vc0")


def test_a_full_pool_and_room_elsewhere_migrates(tmp_path: Path) -> None:
    fleet = Fleet()
    _full_vc0(fleet)
    fleet.job("vc1job", [7, 8], "vc1")  # vc1 keeps n00009..n00012 idle: room for 4 nodes
    fleet.gpu_failure("big", 2, restarted_after_s=3 * 3600, nodes_after=[1, 2, 3, 4])
    [(target, action, reason, saved)] = _actions(fleet.store(tmp_path))
    assert (target, action) == ("job:big", "migrate_job")
    assert "migrate it to vc1 (4 healthy idle nodes for its 4)" in reason
    assert "vc0 has 0 healthy idle node(s) for the 1 it needs" in reason
    # Nothing was repaired before the failure: the wait is the documented default.
    assert saved == pytest.approx(32 * (DEFAULT_REPAIR_S - MIGRATE_S) / 3600, abs=1e-3)


def test_an_idle_healthy_node_in_the_pool_restarts_in_place(tmp_path: Path) -> None:
    fleet = Fleet()
    fleet.job("big", [1, 2, 3, 4], "vc0")  # n00005 and the spare n00006 stay idle
    fleet.job("vc1job", [7, 8], "vc1")
    fleet.gpu_failure("big", 2, restarted_after_s=600, nodes_after=[1, 3, 4, 5])
    [(target, action, reason, _saved)] = _actions(fleet.store(tmp_path))
    assert (target, action) == ("job:big", "restart_from_checkpoint")
    assert "(2 healthy idle node(s) in vc0), leaving out suspect node(s) n00002" in reason


def test_no_room_anywhere_waits_and_says_so(tmp_path: Path) -> None:
    fleet = Fleet()
    _full_vc0(fleet)
    fleet.job("vc1big", [7, 8, 9], "vc1")  # vc1 keeps 3 idle: too few for a 4-node job
    fleet.gpu_failure("big", 2, restarted_after_s=None, nodes_after=[])
    [(_target, action, reason, _saved)] = _actions(fleet.store(tmp_path))
    assert action == "restart_from_checkpoint"
    assert "no other virtual cluster has room" in reason


def test_a_down_node_is_not_healthy_capacity(tmp_path: Path) -> None:
    fleet = Fleet()
    fleet.job("big", [1, 2, 3, 4], "vc0")
    fleet.job("small", [5], "vc0")  # only the spare n00006 is idle, and it is down
    fleet.job("vc1job", [7, 8], "vc1")
    fleet.add(c.NodeWentDown(node=node_name(6), reason="PSU"), T0 + 600 * S)
    fleet.gpu_failure("big", 2, restarted_after_s=None, nodes_after=[])
    [(_target, action, _reason, _saved)] = _actions(fleet.store(tmp_path))
    assert action == "migrate_job"


def test_whatif_fleetlog_migrates_where_baseline_waited(tmp_path: Path) -> None:
    fleet = Fleet()
    _full_vc0(fleet)
    fleet.job("vc1job", [7, 8], "vc1")
    # A software crash elsewhere restarts at once: 600 s is the fleet's normal restart.
    fleet.add(c.JobFailed(job="vc1job", step=50, exit_code=1, reason="RuntimeError"), T0 + 60 * S)
    fleet.add(c.JobRestarted(job="vc1job", from_step=0, nodes=[node_name(7), node_name(8)],
                             overhead_s=600.0), T0 + 660 * S)
    # The recorded scheduler then waited 3 h for a repaired node before restarting "big".
    fleet.gpu_failure("big", 2, restarted_after_s=3 * 3600 + 600, nodes_after=[1, 2, 3, 4])
    con = open_store(fleet.store(tmp_path), read_only=True)
    try:
        records, inputs = load_records(con)
    finally:
        con.close()
    big = next(r for r in records if r.job == "big")
    assert big.restart_s == 600
    [failure] = big.failures
    assert failure.wait_s == pytest.approx(3 * 3600) and failure.migrate and failure.movable
    assert (inputs["short_of_nodes"], inputs["migrations"], inputs["waited_for_nodes"]) == (1, 1, 1)
    results = {r.policy: r for r in evaluate([big])}
    per_gpu_h = 32 / 3600
    # Baseline: hourly checkpoints never completed before the failure an hour in (3600 s of
    # work lost), the restart and the 3 h wait.
    assert results["baseline"].lost_gpu_h == pytest.approx((3600 + 600 + 3 * 3600) * per_gpu_h)
    # Same schedule as daly; fleetlog moves to vc1 instead of waiting.
    assert results["daly"].lost_gpu_h - results["fleetlog"].lost_gpu_h == pytest.approx(
        (3 * 3600 - MIGRATE_S) * per_gpu_h)
    assert results["oracle"].lost_gpu_h == pytest.approx((600 + MIGRATE_S) * per_gpu_h)
