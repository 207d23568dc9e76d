"""One fold of job and node state: the projections fold a simulated store the same in chunks as
in one pass, agree with what the store's views say, and every consumer (job history, capacity,
what-if, job actions, reports, ``fleetlog state``) reports what the fold says."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from fleetlog.analysis.capacity import build_capacity
from fleetlog.analysis.events import HISTORY_TYPES, fold_store, load_events, stream_events
from fleetlog.analysis.job_actions import job_actions
from fleetlog.analysis.job_history import US, job_histories
from fleetlog.analysis.projections import Projections, fold_all
from fleetlog.analysis.report_data import report_data, resolve_window
from fleetlog.analysis.state import fleet_state
from fleetlog.analysis.stored_incidents import load_incidents
from fleetlog.analysis.whatif_data import load_records
from fleetlog.cli.main import cli
from fleetlog.ingest import contract as c
from fleetlog.ingest.store import open_store
from fleetlog.ingest.store.writer import land

pytestmark = pytest.mark.slow  # the module's store takes seconds to build


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The llama3 mix at 200x the hazard: failures, restarts, migrations, a node down and one
    in maintenance, precursors; analysed, so incidents are stored."""
    db = tmp_path_factory.mktemp("fold") / "f.duckdb"
    runner = CliRunner()
    for args in (["simulate", "--nodes", "32", "--duration", "12h", "--seed", "4", "--scenario",
                  "llama3", "--fault-rate", "200", "--to", f"duckdb:{db}"],
                 ["analyze", "--db", str(db)]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, result.output
    return db


@pytest.fixture(scope="module")
def con(store: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = open_store(store, read_only=True)
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def state(con: duckdb.DuckDBPyConnection) -> Projections:
    return fold_store(con, HISTORY_TYPES)


def test_the_store_exercises_every_part_of_the_fold(state: Projections) -> None:
    jobs = state.jobs
    assert jobs.failures and any(f.restart_overhead_s for f in jobs.failures)
    assert any(len({p.nodes for p in jobs.placements if p.job == name}) > 1
               for name in jobs.jobs)  # restarted on other nodes
    assert {o.family for o in state.health.outages} == {"down", "maintenance"}
    assert any(f.last_step_us is not None for f in jobs.failures)


def test_folding_in_chunks_equals_folding_in_one_pass(con: duckdb.DuckDBPyConnection,
                                                       state: Projections) -> None:
    events = load_events(con, HISTORY_TYPES)
    assert fold_all(events) == state
    for cut in (1, len(events) // 7, len(events) // 2, len(events) - 1):
        carried = fold_all(events[:cut])
        assert fold_all(events[cut:], carried) == state
    # By time, through the store: each slice folded onto the state the slices before left.
    first, last = events[0].time_us, events[-1].time_us
    bounds = [first + (last - first) * k // 5 for k in range(1, 5)]
    carried = Projections()
    for since, until in zip([None, *bounds], [*bounds, None], strict=True):
        carried = fold_all(stream_events(con, HISTORY_TYPES, since_us=since, until_us=until),
                           carried)
    assert carried == state


def _rows(con: duckdb.DuckDBPyConnection, sql: str) -> list[tuple[object, ...]]:
    return con.execute(sql).fetchall()


def test_the_fold_says_what_the_store_views_say(con: duckdb.DuckDBPyConnection,
                                                 state: Projections) -> None:
    """The derivations the consumers used to make on their own, in SQL, give the fold's facts."""
    jobs = state.jobs
    spans = {job: (first, last) for job, first, last in _rows(
        con, "SELECT job, epoch_us(min(ts)), epoch_us(max(ts)) FROM job_events GROUP BY job")}
    assert spans == {name: (i.first_us, i.last_us) for name, i in jobs.jobs.items()}
    failures = _rows(con, "SELECT job, epoch_us(ts), event_id FROM job_events "
                          "WHERE type = 'job.failed' ORDER BY ts, event_id")
    assert failures == [(f.job, f.ts_us, f.event_id) for f in jobs.failures]
    last_steps = dict(_rows(
        con, "SELECT f.event_id, epoch_us(max(s.ts)) FROM job_events f JOIN job_events s "
             "ON s.job = f.job AND s.type = 'job.step_reported' AND s.ts < f.ts "
             "WHERE f.type = 'job.failed' GROUP BY f.event_id"))
    assert last_steps == {f.event_id: f.last_step_us for f in jobs.failures
                          if f.last_step_us is not None}
    overheads = Counter(_rows(con, "SELECT job, TRY_CAST(payload->>'overhead_s' AS DOUBLE) "
                                   "FROM job_events WHERE type = 'job.restarted'"))
    assert overheads == Counter((name, o) for name, info in jobs.jobs.items()
                                for o in info.restart_overheads_s)
    host = _rows(con, "SELECT node, type, epoch_us(ts) FROM host_events ORDER BY ts, node")
    opened = [(n, t) for n, kind, t in host if kind in ("node.went_down",
                                                        "node.maintenance_started")]
    assert sorted(opened) == sorted((o.node, o.start_us) for o in state.health.outages)
    back = [(n, t) for n, kind, t in host if kind in ("node.came_up", "node.maintenance_ended")]
    assert sorted(back) == sorted((n, t) for n, times in state.health.back_us.items()
                                  for t in times)
    last_type = dict(_rows(con, "SELECT node, arg_max(type, ts) FROM host_events GROUP BY node"))
    for node, kind in last_type.items():
        assert (state.health.state[node] == "down") == (kind == "node.went_down")


def test_job_history_summarises_the_fold(state: Projections) -> None:
    histories = job_histories(state.jobs)
    assert list(histories) == sorted(state.jobs.jobs)
    for name, h in histories.items():
        info = state.jobs.jobs[name]
        assert (h.first_us, h.last_us, h.ended_us, h.gpus) == (
            info.first_us, info.last_us, info.ended_us, info.gpus)
        assert h.failures == [(f.ts_us, f.event_id) for f in state.jobs.failures
                              if f.job == name]
        assert h.placements == [(p.start_us, p.nodes) for p in state.jobs.placements
                                if p.job == name and p.nodes]
        assert h.checkpoints == sorted(cp.completed_us for cp in state.jobs.checkpoints
                                       if cp.job == name and cp.completed_us is not None)
        for t, _event_id in h.failures:
            assert h.nodes_at(t) == state.jobs.nodes_at(name, t)


def test_capacity_reads_node_health_and_the_jobs(state: Projections) -> None:
    histories = job_histories(state.jobs)
    capacity = build_capacity(state.topology, state.health, histories, [])
    for outage in state.health.outages:
        assert (outage.start_us, outage.end_us, outage.cause) in capacity.out[outage.node]
        assert capacity.out_at(outage.node, outage.start_us)
    first = min(i.first_us for i in state.jobs.jobs.values())
    last = max(i.last_us for i in state.jobs.jobs.values())
    for t in range(first, last, (last - first) // 9):
        running = [name for name, i in state.jobs.jobs.items()
                   if i.first_us <= t and (i.ended_us is None or t < i.ended_us)]
        assert capacity.held_at(t) == {n for name in running
                                       for n in state.jobs.nodes_at(name, t)}


def test_whatif_replays_the_jobs_of_the_fold(con: duckdb.DuckDBPyConnection,
                                             state: Projections) -> None:
    records, inputs = load_records(con)
    replayed = {name: i for name, i in state.jobs.jobs.items()
                if i.last_us > i.first_us and i.gpus > 0}
    assert [r.job for r in records] == sorted(replayed)
    for r in records:
        info = replayed[r.job]
        assert r.wall_s == (info.last_us - info.first_us) / US
        assert (r.gpus, len(r.failures)) == (info.gpus, info.failures)
    assert inputs["failures"] == len(state.jobs.failures)


def test_job_actions_act_on_the_failures_of_the_fold(con: duckdb.DuckDBPyConnection,
                                                     state: Projections) -> None:
    incidents = load_incidents(con, state.topology)
    failed_by = {f.event_id: f.job for f in state.jobs.failures}
    explained = {(s.incident_id, c.job_entity(failed_by[e])) for s in incidents
                 for e in s.evidence if e in failed_by}
    # every failure an incident explains gets its restart: from the checkpoint, on other nodes,
    # or (a software failure) once its code is fixed
    restarts = {(a.incident_id, a.target) for a in job_actions(con)
                if a.action in ("restart_from_checkpoint", "migrate_job", "fix_and_restart")}
    assert restarts == explained and restarts


def test_the_report_counts_what_the_fold_says(con: duckdb.DuckDBPyConnection,
                                              state: Projections) -> None:
    window = resolve_window(con, 30 * 86400.0, None)  # the whole store
    data = report_data(con, window)
    states = Counter(state.health.state.values())
    fleet = data["fleet"]
    assert (fleet["down"], fleet["in_maintenance"]) == (states["down"], states["maintenance"])
    assert fleet["job_failures"] == len(state.jobs.failures)
    rows = {row["job"]: row for row in data["jobs"]}
    assert set(rows) == set(state.jobs.jobs)
    for name, info in state.jobs.jobs.items():
        assert rows[name]["failures"] == info.failures
        assert rows[name]["gpus"] == info.gpus
        assert rows[name]["wall_h"] == pytest.approx((info.last_us - info.first_us) / US / 3600,
                                                     abs=5e-4)


def test_fleet_state_is_the_fold_at_that_moment(store: Path,
                                               con: duckdb.DuckDBPyConnection) -> None:
    at = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
    folded = fold_store(con, until_us=c.to_us(at) + 1)
    shown = fleet_state([store], at)
    assert {n["node"]: n["state"] for n in shown["nodes_not_up"]} == {
        node: s for node, s in folded.health.state.items() if s != "up"}
    assert {j["job"]: (j["state"], j["failures"], j["restarts"]) for j in shown["job_list"]} == {
        name: (i.state, i.failures, i.restarts) for name, i in folded.jobs.jobs.items()}


def test_stored_events_are_upcast_before_the_fold(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A payload of an older schema version reaches the fold through the contract's upcasters,
    as on the wire: here a version 1 ``job.submitted`` that called its size ``gpu_count``."""
    t0 = 1_767_571_200_000_000
    events = [c.make_event(p, time_us=t0 + i, source="t") for i, p in enumerate([
        c.JobSubmitted(job="j1", gpus=16, vcluster="vc0"),
        c.JobPlaced(job="j1", nodes=["n1", "n2", "n3"], vcluster="vc0"),
        c.JobStarted(job="j1"),
    ])]
    db = tmp_path / "old.duckdb"
    land(db, events)
    con = open_store(db)
    try:
        con.execute("UPDATE event_log SET payload = replace(payload::VARCHAR, '\"gpus\"', "
                    "'\"gpu_count\"')::JSON WHERE type = 'job.submitted'")
    finally:
        con.close()

    def v1_to_v2(payload: dict[str, object]) -> dict[str, object]:
        renamed = dict(payload)
        renamed["gpus"] = renamed.pop("gpu_count")
        return renamed

    monkeypatch.setattr(c.JobSubmitted, "VERSION", 2)
    monkeypatch.setitem(c.UPCASTERS, ("job.submitted", 1), v1_to_v2)
    con = open_store(db, read_only=True)
    try:
        state = fold_store(con, HISTORY_TYPES)
    finally:
        con.close()
    assert state.jobs.jobs["j1"].gpus == 16
    # Not the 8 GPUs per node of its placement that a reader blind to the old name falls back on.
    assert job_histories(state.jobs)["j1"].gpus == 16
