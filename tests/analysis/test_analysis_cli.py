"""`fleetlog analyze / incidents / explain / eval` on a small hand-made store; incidents are
stored once, published when a broker is given, and detection never reads the ground truth."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pytest
from click.testing import CliRunner
from fleet_builders import T0, Cluster, job

from fleetlog.cli.main import cli
from fleetlog.ingest import contract as c
from fleetlog.ingest.store.writer import land


def _store(db_path: Path) -> Path:
    cluster = Cluster()
    cluster.hooks.append(lambda s, n, g, v: not (n == "n00002" and g == 3 and s >= 50))
    cluster.add(c.XidReported(node="n00002", gpu=3, xid=79), cluster.t(49) + 3_000_000)
    job(cluster, "j1", [0, 1, 2, 3], fail_at=52, reason="CUDA error: unspecified launch failure")
    job(cluster, "j2", [4, 5, 6, 7], fail_at=90, reason="RuntimeError: shape mismatch")
    events = cluster.build()
    events.append(c.make_event(c.FaultInjected(
        fault_id="f1", category="gpu_hw", entity="gpu:n00002/3", start_us=cluster.t(49) + 3_000_000,
        end_us=cluster.t(110), affected=["gpu:n00002/3", "node:n00002", "job:j1"]),
        time_us=cluster.t(49), source="test"))
    events.append(c.make_event(c.FaultInjected(
        fault_id="f2", category="software", entity="job:j2", start_us=cluster.t(90) + 6_000_000,
        end_us=cluster.t(90) + 6_000_000, affected=["job:j2"]), time_us=cluster.t(90),
        source="test"))
    land(db_path, events)
    return db_path


def _run(*args: str) -> Any:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result


def test_analyze_stores_incidents_once(db_path: Path) -> None:
    db = str(_store(db_path))
    first = json.loads(_run("analyze", "--db", db).output)
    assert first["incidents"] == 2 and first["stored"] == 2
    assert first["by_category"] == {"gpu_hw": 1, "software": 1}
    again = json.loads(_run("analyze", "--db", db).output)
    assert again["stored"] == 0  # same ids: the writer skips them
    listed = json.loads(_run("incidents", "--db", db, "--json").output)
    assert [(i["category"], i["root_entity"]) for i in listed] == [
        ("gpu_hw", "gpu:n00002/3"), ("software", "job:j2")]
    _run("incidents", "--db", db, "--table")
    assert "gpu:n00002/3" in _run("incidents", "--db", db, "--csv").output


def test_explain_tells_the_timeline(db_path: Path) -> None:
    db = str(_store(db_path))
    _run("analyze", "--db", db)
    [first, _] = json.loads(_run("incidents", "--db", db).output)
    text = _run("explain", "--db", db, first["incident_id"]).output
    assert "gpu_hw on gpu:n00002/3" in text
    assert "XID 79" in text and "absent" in text and "job j1 failed" in text
    assert "What to do:" in text
    missing = CliRunner().invoke(cli, ["explain", "--db", db, "inc-nope"])
    assert missing.exit_code == 1
    assert missing.output.strip() == (
        "Error: no incident inc-nope in this store: list them with `fleetlog incidents`")


def test_eval_scores_against_truth(db_path: Path) -> None:
    db = str(_store(db_path))
    report = json.loads(_run("eval", "--db", db, "--json").output)
    assert report["faults"] == 2 and report["true_positives"] == 2
    assert report["f1"] == 1.0
    assert report["overall"]["ac1"] == 1.0
    assert report["confusion"] == {"gpu_hw": {"gpu_hw": 1}, "software": {"software": 1}}
    assert "F1 1.0" in _run("eval", "--db", db, "--table").output


def test_detection_never_reads_the_truth(db_path: Path, tmp_path: Path) -> None:
    db = _store(db_path)
    with_truth = json.loads(_run("analyze", "--db", str(db), "--no-write").output)
    con = duckdb.connect(str(db))
    con.execute("DELETE FROM truth_raw")
    con.close()
    without = json.loads(_run("analyze", "--db", str(db), "--no-write").output)
    with_truth.pop("seconds"), without.pop("seconds")
    assert with_truth == without


def test_shards_need_no_write(db_path: Path, tmp_path: Path) -> None:
    db = str(_store(db_path))
    other = tmp_path / "other.duckdb"
    land(other, [])
    result = CliRunner().invoke(cli, ["analyze", "--db", db, "--db", str(other)])
    assert result.exit_code == 1
    assert "pass --no-write" in result.output
    ok = json.loads(_run("analyze", "--db", db, "--db", str(other), "--no-write").output)
    assert ok["incidents"] == 2


def test_empty_store_has_nothing_to_say(db_path: Path) -> None:
    land(db_path, [])
    assert json.loads(_run("analyze", "--db", str(db_path)).output)["incidents"] == 0


@pytest.mark.kafka
def test_incidents_are_published(db_path: Path, kafka_settings: Any, unique_name: Any) -> None:
    from kafka import KafkaConsumer

    prefix = unique_name("an")
    db = str(_store(db_path))
    out = json.loads(_run("analyze", "--db", db, "--publish", "--bootstrap",
                          kafka_settings.bootstrap, "--topic-prefix", prefix).output)
    assert out["published"] == 2
    consumer = KafkaConsumer(f"{prefix}.analysis", bootstrap_servers=kafka_settings.bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=10_000,
                             group_id=unique_name("g"))
    events = []
    for record in consumer:
        events.append(c.decode(record.value))
        if len(events) == 2:
            break
    consumer.close()
    assert sorted(e.payload.category for e in events) == ["gpu_hw", "software"]
    assert all(e.type == "incident.opened" and e.time_us > T0 for e in events)
