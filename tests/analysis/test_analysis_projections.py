"""Projections are pure folds: chunked == at once == rebuilt from the store."""

from __future__ import annotations

from pathlib import Path

from fleet_builders import STEP, T0, Cluster, job

from fleetlog.analysis.events import PROJECTION_TYPES, load_events
from fleetlog.analysis.projections import fold_all, fold_jobs, fold_node_health, fold_topology
from fleetlog.ingest import contract as c
from fleetlog.ingest.store import open_store
from fleetlog.ingest.store.writer import land


def _events() -> list[c.Envelope]:
    cluster = Cluster(nodes=8, scrapes=30)
    job(cluster, "j1", [0, 1, 2, 3], fail_at=20, reason="RuntimeError")
    job(cluster, "j2", [4, 5], steps_until=25)
    cluster.add(c.JobCheckpointStarted(job="j2", step=10), T0 + 10 * STEP + 1)
    cluster.add(c.JobCheckpointCompleted(job="j2", step=10, duration_s=30, size_gb=100),
                T0 + 13 * STEP + 1)
    cluster.add(c.JobRestarted(job="j1", from_step=10, nodes=["n00007", "n00008"]),
                T0 + 25 * STEP)
    cluster.add(c.JobMigrated(job="j2", from_vcluster="vc0", to_vcluster="vc1",
                              nodes=["n00005"]), T0 + 26 * STEP)
    cluster.add(c.XidReported(node="n00003", gpu=1, xid=79), T0 + 5 * STEP)
    cluster.add(c.NodeMaintenanceStarted(node="n00004", reason="firmware"), T0 + 6 * STEP)
    cluster.add(c.NodeWentDown(node="n00004", reason="reboot"), T0 + 7 * STEP)
    cluster.add(c.NodeCameUp(node="n00004"), T0 + 9 * STEP)
    cluster.add(c.NodeMaintenanceEnded(node="n00004"), T0 + 9 * STEP + 1)
    cluster.add(c.JobCompleted(job="j2", step=40), T0 + 29 * STEP)
    return [e for e in cluster.build() if e.type in PROJECTION_TYPES
            or e.type == "job.step_reported"]


def test_states_follow_the_events() -> None:
    state = fold_all(_events())
    assert len(state.topology.nodes) == 8
    assert state.topology.rack_of("n00005") == "r0002"
    assert state.health.state["n00003"] == "degraded"  # fatal XID 79
    assert state.health.state["n00004"] == "up"
    assert [t.after for t in state.health.history if t.entity == "node:n00004"][-3:] == [
        "maintenance", "down", "up"]
    jobs = state.jobs
    assert jobs.jobs["j1"].state == "restarting"
    assert jobs.jobs["j1"].failures == 1 and jobs.jobs["j1"].restarts == 1
    assert jobs.jobs["j2"].state == "completed"
    assert jobs.jobs["j2"].migrations == 1
    assert jobs.nodes_at("j1", T0) == ("n00001", "n00002", "n00003", "n00004")
    assert jobs.nodes_at("j1", T0 + 26 * STEP) == ("n00007", "n00008")
    [checkpoint] = jobs.checkpoints
    assert checkpoint.duration_s == 30 and checkpoint.completed_us == T0 + 13 * STEP + 1
    states = [t.after for t in jobs.history if t.entity == "job:j2"]
    assert "checkpointing" in states and "migrated" in states


def test_folding_in_chunks_equals_folding_at_once() -> None:
    events = _events()
    whole = fold_all(events)
    for cut in (1, len(events) // 3, len(events) // 2, len(events) - 1):
        first = fold_all(events[:cut])
        assert fold_all(events[cut:], first) == whole
        assert fold_all(events[:cut]) == first  # the start state was not mutated
    assert fold_topology(events) == whole.topology
    assert fold_node_health(events) == whole.health
    assert fold_jobs(events) == whole.jobs


def test_replay_from_the_store_rebuilds_the_same_state(db_path: Path) -> None:
    events = _events()
    land(db_path, events)
    con = open_store(db_path)
    stored = load_events(con, (*PROJECTION_TYPES, "job.step_reported"))
    assert [e.id for e in stored] == [e.id for e in sorted(events, key=lambda e: (e.time_us,
                                                                                  e.id))]
    assert fold_all(stored) == fold_all(sorted(events, key=lambda e: (e.time_us, e.id)))
