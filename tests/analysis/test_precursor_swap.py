"""A precursor on one node of a running job: checkpoint now, then swap the node for a spare.

Hand-built stores (``vc_fleet``): a gpu_hbm precursor detected 20 minutes before the failure it
announces, and one that no failure follows (a false alarm, which the replay charges).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from vc_fleet import FAIL, T0, Fleet, S

from fleetlog.analysis.job_actions import job_actions
from fleetlog.analysis.whatif import Alarm, FailureRecord, JobRecord, evaluate, replay_losses
from fleetlog.analysis.whatif_data import load_records
from fleetlog.ingest import contract as c
from fleetlog.ingest.store import open_store

WARN = FAIL - 1200 * S  # the SBE ramp is detected 20 min before the DBE


def _warned_fleet(*, spare_idle: bool) -> Fleet:
    fleet = Fleet()
    fleet.job("big", [1, 2, 3, 4], "vc0")
    if not spare_idle:
        fleet.job("other", [5, 6], "vc0")
    fleet.job("quiet", [7, 8], "vc1")
    fleet.incident("hbm-n2", "gpu_hbm", c.gpu_entity("n00002", 3), WARN - 600 * S, FAIL,
                   WARN, [])
    fleet.gpu_failure("big", 2, restarted_after_s=600, nodes_after=[1, 3, 4, 5])
    # A precursor on vc1 that no failure follows: a false alarm for job "quiet".
    fleet.incident("hbm-n7", "gpu_hbm", c.gpu_entity("n00007", 1), T0 + 7200 * S,
                   T0 + 7800 * S, T0 + 7300 * S, [])
    return fleet


def test_a_one_node_precursor_with_a_spare_recommends_the_swap(tmp_path: Path) -> None:
    con = open_store(_warned_fleet(spare_idle=True).store(tmp_path), read_only=True)
    try:
        actions = [a for a in job_actions(con) if a.incident_id == "hbm-n2"]
    finally:
        con.close()
    by_action = {a.action: a for a in actions}
    assert set(by_action) >= {"checkpoint_now", "swap_node"}
    swap = by_action["swap_node"]
    assert swap.target == "job:big" and swap.ts_us == WARN + 60 * S  # after the 60 s checkpoint
    assert "leaving out suspect node(s) n00002" in swap.reason
    # The measured lead is the 20 min of this very warning: 32 GPUs x (1200 - 60) s.
    assert swap.gpu_hours_saved == pytest.approx(32 * 1140 / 3600, abs=1e-3)


def test_the_swap_names_the_checkpoint_it_follows_in_the_store_and_on_the_wire(
        tmp_path: Path) -> None:
    """Automation orders the two by ``after`` (the checkpoint's event id), not by time."""
    from fleetlog.analysis.recommend import recommend

    db = _warned_fleet(spare_idle=True).store(tmp_path)
    rows = [r for r in recommend([db]) if r["incident_id"] == "hbm-n2"]
    by_action = {r["action"]: r for r in rows}
    checkpoint, swap = by_action["checkpoint_now"], by_action["swap_node"]
    assert swap["after"] == checkpoint["id"] and checkpoint["after"] is None
    con = open_store(db, read_only=True)
    try:
        stored = dict(con.execute(
            "SELECT action, after FROM recommendations WHERE incident_id = 'hbm-n2' "
            "AND action IN ('checkpoint_now', 'swap_node')").fetchall())
        [[payload]] = con.execute("SELECT payload FROM event_log WHERE event_id = ?",
                                  [swap["id"]]).fetchall()
    finally:
        con.close()
    assert stored == {"checkpoint_now": None, "swap_node": checkpoint["id"]}
    decoded = c.decode(c.encode(c.make_event(
        c.RecommendationIssued(incident_id="i", target="job:big", action="swap_node",
                               reason="r", after=checkpoint["id"]),
        time_us=WARN, source="t")))
    assert isinstance(decoded, c.Envelope)
    assert getattr(decoded.payload, "after") == checkpoint["id"]  # noqa: B009
    assert checkpoint["id"] in payload

    def stored_count() -> int:
        con = open_store(db, read_only=True)
        try:
            return int(con.execute("SELECT count(*) FROM recommendations").fetchone()[0])
        finally:
            con.close()

    before = stored_count()
    recommend([db])
    assert stored_count() == before  # same ids again: a re-run adds nothing


def test_a_recommendation_without_a_predecessor_keeps_the_id_it_had_before_after_existed(
        ) -> None:
    payload = c.RecommendationIssued(incident_id="inc-1", target="node:n00001",
                                     action="reset_gpu", reason="XID 48", gpu_hours_saved=0.0)
    event = c.make_event(payload, time_us=T0, source="fleetlog-recommend")
    # The id computed by the code before ``after`` was added (blake2b of the five fields).
    import hashlib

    import msgspec
    old = hashlib.blake2b(
        msgspec.msgpack.encode({"incident_id": "inc-1", "target": "node:n00001",
                                "action": "reset_gpu", "reason": "XID 48",
                                "gpu_hours_saved": 0.0})
        + f"|recommendation.issued|{T0}|fleetlog-recommend".encode(), digest_size=12)
    assert event.id == old.hexdigest()


def test_no_idle_spare_means_checkpoint_now_only(tmp_path: Path) -> None:
    con = open_store(_warned_fleet(spare_idle=False).store(tmp_path), read_only=True)
    try:
        actions = {a.action for a in job_actions(con) if a.incident_id == "hbm-n2"}
    finally:
        con.close()
    assert "checkpoint_now" in actions and "swap_node" not in actions


def test_replay_records_the_swap_and_the_false_alarm(tmp_path: Path) -> None:
    con = open_store(_warned_fleet(spare_idle=True).store(tmp_path), read_only=True)
    try:
        records, inputs = load_records(con)
    finally:
        con.close()
    jobs = {r.job: r for r in records}
    [failure] = jobs["big"].failures
    assert failure.warned_before_s == 1200 and failure.swap
    assert [a.swap for a in jobs["quiet"].alarms] == [True]
    assert (inputs["swapped"], inputs["false_alarms"]) == (1, 1)


def _job(*failures: FailureRecord, alarms: tuple[Alarm, ...] = ()) -> JobRecord:
    return JobRecord(job="j", gpus=64, wall_s=10 * 3600, checkpoint_s=60.0, restart_s=600.0,
                     failures=failures, alarms=alarms)


def test_a_swap_loses_no_work_and_a_false_alarm_costs_a_checkpoint_and_a_restart() -> None:
    warned = FailureRecord(at_s=3000, warned_before_s=1200, swap=True)
    plain = FailureRecord(at_s=3000, warned_before_s=1200)
    swapped = replay_losses(_job(warned), "fleetlog", mtbf_s=100 * 3600)
    ckpt_now = replay_losses(_job(plain), "fleetlog", mtbf_s=100 * 3600)
    assert (swapped.rework_s, swapped.restart_s, swapped.swaps) == (0.0, 600.0, 1)
    assert (ckpt_now.rework_s, ckpt_now.restart_s) == (1200 - 60, 600.0)
    alarm = replay_losses(_job(alarms=(Alarm(5000, swap=True),)), "fleetlog", mtbf_s=100 * 3600)
    quiet = replay_losses(_job(), "fleetlog", mtbf_s=100 * 3600)
    assert alarm.checkpoint_s - quiet.checkpoint_s == 60.0 and alarm.restart_s == 600.0
    results = {r.policy: r for r in evaluate([_job(warned, alarms=(Alarm(5000, swap=False),))])}
    assert results["oracle"].ettr >= results["fleetlog"].ettr > results["daly"].ettr
