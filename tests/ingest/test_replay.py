"""`fleetlog replay`: a store replayed into a fresh one holds the same events."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner
from kafka import KafkaConsumer

from fleetlog.cli.main import cli
from fleetlog.ingest import contract as c
from fleetlog.ingest.replay import replay
from fleetlog.ingest.store import open_store
from fleetlog.ingest.store.writer import land

T0 = 1_767_571_200_000_000  # 2026-01-05T00:00:00Z


def _events() -> list[c.Envelope]:
    events = [
        c.make_event(c.NodeRegistered(node="n1", rack="r1", region="eu", vcluster="vc0",
                                      gpu_count=8, gpu_model="H100", nic_count=8), time_us=T0,
                     source="t"),
        c.make_event(c.JobSubmitted(job="j1", gpus=16, vcluster="vc0"), time_us=T0, source="t"),
    ]
    for tick in range(30):
        temps = [60.0 + g + tick for g in range(8)] + [math.nan] * 7
        events.append(c.make_event(
            c.gpu_batch(["n1", "n2"], [8, 7], list(range(8)) + list(range(7)),
                        {"gpu_temp_c": temps, "power_w": [500.0] * 15}),
            time_us=T0 + tick * 10_000_000, source="t", key="rack:r1"))
        events.append(c.make_event(
            c.port_batch(["leaf-0"], [3], [1, 2, 3], {"symbol_error": [tick, 0, 1]}),
            time_us=T0 + tick * 10_000_000, source="t"))
        events.append(c.make_event(c.JobStepReported(job="j1", step=tick, step_time_s=1.5,
                                                     tokens_per_s=1e6, loss=2.0),
                                   time_us=T0 + tick * 10_000_000 + 1, source="t"))
    events.append(c.make_event(c.XidReported(node="n1", gpu=3, xid=79), time_us=T0 + 5_000_000,
                               source="t"))
    events.append(c.make_event(c.FaultInjected(fault_id="f1", category="gpu_hw",
                                               entity="gpu:n1/3", start_us=T0 + 5_000_000,
                                               affected=["gpu:n1/3", "job:j1"]),
                               time_us=T0 + 5_000_000, source="t"))
    return events


VIEWS = {
    "gpu_samples": "SELECT * FROM gpu_samples ORDER BY event_id, node, gpu",
    "port_samples": "SELECT * FROM port_samples ORDER BY event_id, switch, port",
    "xid_events": "SELECT * FROM xid_events ORDER BY event_id",
    "job_events": "SELECT * FROM job_events ORDER BY event_id",
    "nodes": "SELECT * EXCLUDE (registered_ts) FROM nodes ORDER BY node",
    "truth_faults": "SELECT * FROM truth_faults ORDER BY fault_id",
    "event_log": "SELECT event_id, type, v, ts, source, key, rows, payload FROM event_log "
                 "ORDER BY event_id",
}


def _dump(path: Path) -> dict[str, list[tuple]]:
    con = open_store(path, read_only=True)
    try:
        return {name: con.execute(sql).fetchall() for name, sql in VIEWS.items()}
    finally:
        con.close()


def test_replay_into_a_fresh_store_is_identical(tmp_path: Path) -> None:
    source, target = tmp_path / "a.duckdb", tmp_path / "b.duckdb"
    land(source, _events())
    result = CliRunner().invoke(cli, ["replay", "--db", str(source), "--to", f"duckdb:{target}"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    assert stats["events"] == len(_events())
    assert stats["gpu_samples"] == 30 * 15
    assert _dump(source) == _dump(target)
    # A second replay adds nothing: same ids.
    CliRunner().invoke(cli, ["replay", "--db", str(source), "--to", f"duckdb:{target}"])
    assert _dump(source) == _dump(target)


def test_time_range_and_order(tmp_path: Path) -> None:
    source = tmp_path / "a.duckdb"
    land(source, _events())
    from datetime import UTC, datetime

    seen: list[c.Envelope] = []
    stats = replay([source], seen.extend, since=datetime(2026, 1, 5, 0, 1, tzinfo=UTC),
                   until=datetime(2026, 1, 5, 0, 2, tzinfo=UTC))
    assert stats.events == len(seen) > 0
    # The slice carries what it needs from before it (first: the node's registration and the
    # submission of its job), then only its own events.
    assert stats.inventory == 2
    assert {type(e.payload) for e in seen[:2]} == {c.NodeRegistered, c.JobSubmitted}
    assert all(T0 + 60_000_000 <= e.time_us <= T0 + 120_000_000 for e in seen[2:])
    steps = [e.payload.step for e in seen if isinstance(e.payload, c.JobStepReported)]
    assert steps == sorted(steps)


def test_speed_keeps_relative_timing(tmp_path: Path) -> None:
    source = tmp_path / "a.duckdb"
    land(source, _events())
    slept: list[float] = []
    now = [0.0]

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    replay([source], lambda _e: None, speed=60.0, sleep=sleep, clock=lambda: now[0])
    # 290 s of events at 60x is ~4.8 s of waiting, handed to sleep() in steps.
    assert sum(slept) == pytest.approx(290 / 60, rel=0.05)


def test_bad_ranges_and_self_replay_are_one_line(tmp_path: Path) -> None:
    source = tmp_path / "a.duckdb"
    land(source, _events())
    runner = CliRunner()
    result = runner.invoke(cli, ["replay", "--db", str(source), "--since", "2026-01-06T00:00:00Z",
                                 "--until", "2026-01-05T00:00:00Z", "--to", "duckdb:x.duckdb"])
    assert result.exit_code == 1
    assert "is after --until" in result.output
    result = runner.invoke(cli, ["replay", "--db", str(source), "--to", f"duckdb:{source}"])
    assert result.exit_code == 1
    assert "into itself" in result.output
    result = runner.invoke(cli, ["replay", "--db", str(source), "--since", "2026-01-05",
                                 "--to", "duckdb:x.duckdb"])
    assert result.exit_code == 2
    assert "has no time zone" in result.output


@pytest.mark.slow
@pytest.mark.kafka
def test_replay_to_kafka(tmp_path: Path, kafka_bootstrap: str, unique_name) -> None:
    source = tmp_path / "a.duckdb"
    land(source, _events())
    prefix = unique_name("replay")
    result = CliRunner().invoke(cli, ["replay", "--db", str(source), "--topic-prefix", prefix,
                                      "--to", f"kafka://{kafka_bootstrap}"])
    assert result.exit_code == 0, result.output
    consumer = KafkaConsumer(*c.all_topics(prefix), bootstrap_servers=kafka_bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=8000)
    received = [c.decode(m.value) for m in consumer]
    consumer.close()
    assert sorted(e.id for e in received if isinstance(e, c.Envelope)) == sorted(
        e.id for e in _events())


@pytest.mark.slow
def test_replayed_store_analyzes_to_the_same_projections_and_incidents(tmp_path: Path) -> None:
    """Issue #8: replay a store into a fresh one, analyze both: identical results."""
    from fleetlog.analysis.events import load_events
    from fleetlog.analysis.projections import fold_all
    from fleetlog.analysis.sql import run_query

    source, copy = tmp_path / "a.duckdb", tmp_path / "b.duckdb"
    runner = CliRunner()
    for args in (
        ["simulate", "--nodes", "32", "--duration", "4h", "--seed", "5", "--scenario", "mixed",
         "--fault-rate", "80", "--to", f"duckdb:{source}"],
        ["replay", "--db", str(source), "--to", f"duckdb:{copy}"],
        ["analyze", "--db", str(source)],
        ["analyze", "--db", str(copy)],
    ):
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, result.output
    incidents = "SELECT * FROM incidents ORDER BY incident_id"
    assert run_query([source], incidents).rows == run_query([copy], incidents).rows
    assert run_query([source], "SELECT count(*) FROM incidents").rows[0][0] > 0
    folded = []
    for db in (source, copy):
        con = open_store(db, read_only=True)
        try:
            folded.append(fold_all(load_events(con)))
        finally:
            con.close()
    assert folded[0] == folded[1]


def test_a_replayed_slice_carries_its_inventory(tmp_path: Path) -> None:
    """Issue #18: a time slice replayed into a fresh store holds the topology it needs (racks,
    nodes, switches, links registered long before the slice), so its analysis names the same
    root causes as the whole store's over the same window (a rack's power loss stays a rack's)."""
    from fleetlog.analysis.sql import run_query

    source, piece = tmp_path / "a.duckdb", tmp_path / "b.duckdb"
    since = "2026-01-05T00:20:00Z"
    runner = CliRunner()
    for args in (
        ["simulate", "--nodes", "16", "--duration", "3h", "--seed", "5", "--scenario",
         "rack_power", "--to", f"duckdb:{source}"],
        ["replay", "--db", str(source), "--since", since, "--to", f"duckdb:{piece}"],
    ):
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, result.output
    inventory = ("SELECT (SELECT count(*) FROM nodes), (SELECT count(*) FROM links), "
                 "(SELECT count(DISTINCT rack) FROM nodes)")
    assert run_query([piece], inventory).rows == run_query([source], inventory).rows
    found = []
    for db in (source, piece):
        result = runner.invoke(cli, ["analyze", "--db", str(db), "--since", since, "--no-write"])
        assert result.exit_code == 0, result.output
        found.append(sorted((i["category"], i["root_entity"])
                            for i in json.loads(result.output)["opened"]))
    assert found[0] == found[1]
    assert ("rack_power", found[0][0][1]) in found[0] and found[0][0][1].startswith("rack:")
