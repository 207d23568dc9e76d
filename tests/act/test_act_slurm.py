"""``fleetlog act`` against a real Slurm (tests/act/conftest.py): a simulated gpu_hw run's
faulty nodes drained only with --execute, an administrator's drain kept, the budget and the
breaker stopping a wave, a job requeued without its suspect node, a restart repeating nothing,
every attempt landed as an event."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import duckdb
import pytest
from click.testing import CliRunner
from slurm_cluster import NODES, Slurm, poll

from fleetlog.act.actor import Actor, ActPolicy, action_id
from fleetlog.act.slurm import SlurmBackend
from fleetlog.act.source import load_recommendations
from fleetlog.cli.main import cli
from fleetlog.ingest import contract as c
from fleetlog.ingest.store import open_store
from fleetlog.ingest.store.sink import StoreSink

pytestmark = pytest.mark.slow


def _act(slurm: Slurm, db: Path, *extra: str) -> list[dict[str, Any]]:
    result = CliRunner().invoke(cli, ["act", "--db", str(db), "--slurm-conf", str(slurm.conf),
                                      "--verify-timeout", "10s", "--nl", *extra])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.output.splitlines() if line.strip()]


def _copy(store: Path, tmp_path: Path) -> Path:
    db = tmp_path / "fleet.duckdb"
    shutil.copy(store, db)
    return db


def _faulty_nodes(db: Path) -> list[str]:
    """The nodes of the incidents' roots, read from the store (not from the simulator)."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        roots = [r for (r,) in con.execute("SELECT root_entity FROM incidents").fetchall()]
    finally:
        con.close()
    return sorted({r.split(":", 1)[1].split("/", 1)[0] for r in roots
                   if r.startswith(("gpu:", "node:"))})


def _action_events(db: Path) -> list[tuple[str, str, dict[str, Any]]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute("SELECT event_id, type, payload FROM event_log "
                           "WHERE type LIKE 'action.%' ORDER BY event_id").fetchall()
    finally:
        con.close()
    return [(event_id, kind, json.loads(payload)) for event_id, kind, payload in rows]


def _breaker(tmp_path: Path, share: float, per_node: int = 1) -> Path:
    path = tmp_path / "remediation.toml"
    path.write_text(f"[circuit_breaker]\nmax_drain_share = {share}\nwindow_s = 3600\n"
                    f"[actions]\nmax_per_node = {per_node}\nwindow_s = 3600\n")
    return path


def test_faulty_nodes_are_drained_only_with_execute(
        slurm: Slurm, gpu_hw_store: Path, tmp_path: Path) -> None:
    db = _copy(gpu_hw_store, tmp_path)
    faulty = _faulty_nodes(db)
    assert len(faulty) >= 2
    config = _breaker(tmp_path, 1.0)

    planned = _act(slurm, db, "--remediation-config", str(config))
    drains = [o for o in planned if o["action"] == "drain_node"]
    assert {o["outcome"] for o in drains} == {"planned"}
    for node in faulty:
        assert any(f"NodeName={node} State=DRAIN" in o["command"] for o in drains), node
        assert slurm.node(node) == ("idle", "none")  # the dry run changed nothing
    assert _action_events(db) == []  # and landed nothing

    done = _act(slurm, db, "--remediation-config", str(config), "--execute")
    executed = [o for o in done if o["action"] == "drain_node"]
    assert {o["outcome"] for o in executed} == {"executed"}
    assert all(o["verified"] for o in executed)
    for node in faulty:
        state, reason = slurm.node(node)
        assert state == "drained"
        assert reason.startswith("fleetlog inc-")
    for node in set(NODES) - set(faulty):
        assert slurm.node(node)[0] == "idle"


def test_a_node_an_administrator_drained_keeps_its_reason(
        slurm: Slurm, gpu_hw_store: Path, tmp_path: Path) -> None:
    db = _copy(gpu_hw_store, tmp_path)
    theirs = _faulty_nodes(db)[0]
    slurm.drain(theirs, "admin: fan replaced, burn-in")
    done = _act(slurm, db, "--remediation-config", str(_breaker(tmp_path, 1.0)), "--execute")
    mine = [o for o in done if o["target"] == f"node:{theirs}"]
    assert [o["outcome"] for o in mine] == ["skipped"]
    assert "reason fleetlog did not write" in mine[0]["why"]
    assert slurm.node(theirs) == ("drained", "admin: fan replaced, burn-in")


def test_the_breaker_stops_a_wave_of_drains(
        slurm: Slurm, gpu_hw_store: Path, tmp_path: Path) -> None:
    db = _copy(gpu_hw_store, tmp_path)
    faulty = _faulty_nodes(db)
    assert len(faulty) >= 3
    # 8 nodes, at most a quarter drained within the window: 2 drains, then hold.
    done = _act(slurm, db, "--remediation-config", str(_breaker(tmp_path, 0.25)), "--execute")
    drains = [o for o in done if o["action"] == "drain_node"]
    assert [o["outcome"] for o in drains[:2]] == ["executed", "executed"]
    held = drains[2:]
    assert held and all(o["outcome"] == "skipped" and "circuit breaker" in o["why"]
                        for o in held)
    assert sum(state == "drained" for state in slurm.states().values()) == 2
    events = _action_events(db)
    assert sum(kind == "action.skipped" and "circuit breaker" in p["why"]
               for _id, kind, p in events) == len(held)


def _recommend(db: Path, *recs: tuple[str, str, str, str]) -> None:
    """Land recommendation.issued events (incident, target, action, reason) in a new store."""
    sink = StoreSink.open(db)
    try:
        sink.write([c.make_event(c.RecommendationIssued(
            incident_id=incident, target=target, action=action, reason=reason),
            time_us=1_767_571_560_000_000 + i, source="test") for i, (incident, target, action,
                                                                       reason) in enumerate(recs)])
    finally:
        sink.close()


def test_the_budget_stops_a_second_action_on_one_job(slurm: Slurm, tmp_path: Path) -> None:
    job = slurm.sbatch("n00001", "n00002")
    db = tmp_path / "fleet.duckdb"
    names = tmp_path / "names.toml"
    names.write_text(f'[jobs]\nj0001 = "{job}"\n')
    _recommend(db, ("inc-a", "job:j0001", "restart_from_checkpoint",
                    "job j0001 failed: restart leaving out suspect node(s) n00002"),
               ("inc-b", "job:j0001", "restart_from_checkpoint",
                "job j0001 failed: restart leaving out suspect node(s) n00001"))
    done = _act(slurm, db, "--execute", "--name-map", str(names))
    assert [o["outcome"] for o in done] == ["executed", "skipped"]
    assert done[1]["why"].startswith(f"budget: 1 action(s) on job:{job}")
    assert slurm.job(job)["ExcNodeList"] == "n00002"


def test_a_job_is_requeued_without_the_suspect_node(
        slurm: Slurm, gpu_hw_store: Path, tmp_path: Path) -> None:
    db = _copy(gpu_hw_store, tmp_path)
    con = open_store(db, read_only=True)
    try:
        restart = next(r for r in load_recommendations(con)
                       if r.action == "restart_from_checkpoint")
    finally:
        con.close()
    suspect = restart.reason.rsplit("suspect node(s) ", 1)[1].split(",")[0].split(";")[0]
    other = next(n for n in NODES if n != suspect)
    job = slurm.sbatch(suspect, other)  # the job runs on the suspect node
    names = tmp_path / "names.toml"
    names.write_text(f'[jobs]\n{restart.target.removeprefix("job:")} = "{job}"\n')
    done = _act(slurm, db, "--execute", "--name-map", str(names),
                "--remediation-config", str(_breaker(tmp_path, 1.0)))
    mine = next(o for o in done if o["recommendation_id"] == restart.id)
    assert mine["outcome"] == "executed" and mine["verified"] is True
    assert mine["command"] == (f"scontrol requeuehold {job}; scontrol update JobId={job} "
                               f"ExcNodeList={suspect}; scontrol release {job}")
    info = slurm.job(job)
    assert info["ExcNodeList"] == suspect
    assert info["JobState"] in ("PENDING", "RUNNING")
    if info.get("NodeList", "(null)") != "(null)":  # started again elsewhere already
        assert suspect not in slurm.run("scontrol", "show", "hostnames", info["NodeList"])
    assert int(info["Restarts"]) == 1


def test_a_killed_act_restarted_repeats_nothing_and_every_attempt_is_an_event(
        slurm: Slurm, gpu_hw_store: Path, tmp_path: Path) -> None:
    db = _copy(gpu_hw_store, tmp_path)
    policy = ActPolicy.load(_breaker(tmp_path, 1.0), execute=True)
    # The first run dies after its first two actions: it landed their attempts and no more.
    con = open_store(db)
    try:
        recs = load_recommendations(con)
        sink = StoreSink.sharing(con)
        first = Actor(SlurmBackend(str(slurm.conf)), policy, sink=sink).act(recs[:2])
        sink.close()
    finally:
        con.close()
    assert [o.outcome for o in first] == ["executed", "executed"]
    drained_before = slurm.states()

    second = _act(slurm, db, "--remediation-config", str(_breaker(tmp_path, 1.0)),
                  "--execute")
    by_id = {o["action_id"]: o for o in second}
    assert all(o.action_id not in by_id for o in first)  # not attempted again
    assert len(second) == len(recs) - 2
    third = _act(slurm, db, "--remediation-config", str(_breaker(tmp_path, 1.0)), "--execute")
    assert third == []  # a third run has nothing left to do
    for node, state in drained_before.items():
        if state == "drained":
            assert slurm.node(node)[0] == "drained"

    events = _action_events(db)
    assert len(events) == len(recs)  # one event per attempt, none repeated
    ids = {p["action_id"] for _id, _kind, p in events}
    assert ids == {action_id(r.id, r.action) for r in recs}
    for _event_id, kind, payload in events:
        assert payload["backend"] == "slurm"
        assert payload["recommendation_id"] and payload["incident_id"].startswith("inc-")
        field = {"action.executed": "verified", "action.skipped": "why",
                 "action.failed": "error"}[kind]
        assert field in payload


def test_resume_returns_only_fleetlogs_drains_to_service(
        slurm: Slurm, gpu_hw_store: Path, tmp_path: Path) -> None:
    db = _copy(gpu_hw_store, tmp_path)
    ours, theirs = _faulty_nodes(db)[:2]
    config = _breaker(tmp_path, 1.0)
    _act(slurm, db, "--remediation-config", str(config), "--execute")
    slurm.run("scontrol", "update", f"NodeName={theirs}", "State=RESUME")
    slurm.drain(theirs, "admin: DIMM swap")

    dry = _act(slurm, db, "--resume", ours)
    assert [o["outcome"] for o in dry] == ["planned"]
    assert slurm.node(ours)[0] == "drained"

    done = _act(slurm, db, "--execute", "--resume", ours, "--resume", theirs)
    assert [(o["target"], o["outcome"]) for o in done] == [
        (f"node:{ours}", "executed"), (f"node:{theirs}", "skipped")]
    assert done[0]["verified"] is True and done[0]["incident_id"].startswith("inc-")
    assert done[0]["command"] == f"scontrol update NodeName={ours} State=RESUME"
    # back in service: idle, maybe flagged "*" (not responding) until its next ping
    assert slurm.node(ours)[0].rstrip("*") == "idle"
    assert slurm.node(theirs)[1] == "admin: DIMM swap"
    assert slurm.node(theirs)[0].rstrip("*") == "drained"
    again = _act(slurm, db, "--execute", "--resume", ours)
    assert [o["outcome"] for o in again] == ["skipped"]  # not drained any more: nothing to do


# A batch script as training launchers write it: SIGUSR1 means "checkpoint now", not "exit".
CHECKPOINTING = "trap 'touch {marker}' USR1; while true; do sleep 0.2; done"


def test_checkpoint_now_signals_the_batch_step_and_migrate_moves_the_job(
        slurm: Slurm, tmp_path: Path) -> None:
    marker = tmp_path / "checkpointed"
    job = slurm.sbatch("n00003", script=CHECKPOINTING.format(marker=marker))
    db = tmp_path / "fleet.duckdb"
    names = tmp_path / "names.toml"
    names.write_text(f'[jobs]\nj0007 = "{job}"\n')
    config = _breaker(tmp_path, 1.0, per_node=2)
    argv = ("--execute", "--name-map", str(names), "--remediation-config", str(config))
    _recommend(db, ("inc-c", "job:j0007", "checkpoint_now",
                    "precursor gpu_hbm on gpu:n00003/1: checkpoint now"))
    done = _act(slurm, db, *argv)
    assert [(o["outcome"], o["verified"]) for o in done] == [("executed", True)]
    assert done[0]["command"] == f"scancel --signal=USR1 --batch {job}"
    poll("the batch step's checkpoint", marker.exists, 10)  # it got the signal ...
    assert slurm.job(job)["JobState"] == "RUNNING"  # ... and lived on

    _recommend(db, ("inc-m", "job:j0007", "migrate_job",
                    "job j0007 failed (gpu_hbm on gpu:n00003/1): migrate it to vc1 (2 healthy "
                    "idle nodes for its 1) and resume from its last checkpoint"))
    done = _act(slurm, db, *argv)
    assert [(o["action"], o["outcome"], o["verified"]) for o in done] == [
        ("migrate_job", "executed", True)]
    assert slurm.job(job)["Partition"] == "vc1"


def test_a_refused_command_is_action_failed_and_leaves_no_job_held(
        slurm: Slurm, tmp_path: Path) -> None:
    job = slurm.sbatch("n00004")
    db = tmp_path / "fleet.duckdb"
    names = tmp_path / "names.toml"
    names.write_text(f'[jobs]\nj0008 = "{job}"\n')
    _recommend(db, ("inc-f", "job:j0008", "migrate_job",
                    "job j0008 failed: migrate it to vc9 (4 healthy idle nodes for its 1)"))
    done = _act(slurm, db, "--execute", "--name-map", str(names))
    assert [o["outcome"] for o in done] == ["failed"]
    assert "Invalid partition name" in done[0]["why"]
    assert done[0]["why"].endswith(f"(job {job} released again)")
    info = slurm.job(job)
    assert info["Partition"] == "vc0"
    assert "held" not in info.get("Reason", "").lower()
    assert info["Priority"] != "0"  # a held job has priority 0
    events = _action_events(db)
    assert [(kind, p["error"]) for _id, kind, p in events] == [("action.failed",
                                                               done[0]["why"])]


def test_a_swap_waits_for_its_checkpoint_and_a_pending_job_is_not_signalled(
        slurm: Slurm, tmp_path: Path) -> None:
    job = slurm.run("sbatch", "--parsable", "--hold", "--output=/dev/null",
                    "--wrap=sleep 600").strip()  # held: pending, never started
    db = tmp_path / "fleet.duckdb"
    names = tmp_path / "names.toml"
    names.write_text(f'[jobs]\nj0009 = "{job}"\n')
    checkpoint = c.make_event(c.RecommendationIssued(
        incident_id="inc-p", target="job:j0009", action="checkpoint_now",
        reason="precursor gpu_hbm on gpu:n00005/2: checkpoint now"),
        time_us=1_767_571_560_000_000, source="test")
    swap = c.make_event(c.RecommendationIssued(
        incident_id="inc-p", target="job:j0009", action="swap_node",
        reason="restart job j0009 from it on a spare node, leaving out suspect node(s) n00005, "
        "before the failure reaches it", after=checkpoint.id),
        time_us=1_767_571_560_000_001, source="test")
    sink = StoreSink.open(db)
    sink.write([checkpoint, swap])
    sink.close()
    done = _act(slurm, db, "--execute", "--name-map", str(names))
    assert [(o["action"], o["outcome"]) for o in done] == [
        ("checkpoint_now", "skipped"), ("swap_node", "skipped")]
    assert done[0]["why"] == f"job {job} is PENDING: nothing to do"
    assert done[1]["why"] == f"waits for recommendation {checkpoint.id}, which was not carried out"
    assert slurm.job(job)["JobState"] == "PENDING"
