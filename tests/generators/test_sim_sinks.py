"""The sinks: JSON-lines files, the DuckDB store (embedded mode), the real Kafka broker, null."""

from __future__ import annotations

from pathlib import Path

import pytest
from kafka import KafkaConsumer

from fleetlog.generators.config import SimConfig, SimulationError
from fleetlog.generators.run import simulate
from fleetlog.generators.sinks import MemorySink, parse_target
from fleetlog.ingest import contract as c
from fleetlog.ingest.kafka.settings import KafkaSettings
from fleetlog.ingest.store import open_store

CONFIG = SimConfig(nodes=16, hours=0.5, seed=2, scenario="rack_power", fault_rate=20.0)


def test_jsonl_writes_one_file_per_topic_family(tmp_path: Path) -> None:
    summary = simulate(CONFIG, f"jsonl:{tmp_path}")
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["gpu.jsonl", "host.jsonl", "inventory.jsonl", "jobs.jsonl", "net.jsonl",
                     "truth.jsonl"]
    lines = 0
    for path in tmp_path.iterdir():
        for line in path.read_bytes().splitlines():
            event = c.decode(line)
            assert isinstance(event, c.Envelope), event
            assert event.topic_family == path.stem
            lines += 1
    assert lines == summary["events"]
    assert summary["faults"] == 1 and summary["to"] == f"jsonl:{tmp_path}"


def test_duckdb_sink_lands_everything_in_the_store(tmp_path: Path) -> None:
    db = tmp_path / "fleet.duckdb"
    summary = simulate(CONFIG, f"duckdb:{db}")
    assert summary["landed"] == summary["events"] and summary["duplicates"] == 0
    con = open_store(db, read_only=True)
    try:
        def one(sql: str) -> object:
            row = con.execute(sql).fetchone()
            assert row is not None
            return row[0]

        assert one("SELECT count(*) FROM gpu_samples") == summary["gpu_samples"]
        assert one("SELECT count(*) FROM port_samples") == summary["port_samples"]
        assert one("SELECT count(*) FROM nodes") == 16
        assert one("SELECT count(*) FROM event_log") == summary["events"]
        assert one("SELECT category FROM truth_faults") == "rack_power"
        assert one("SELECT count(*) FROM host_events WHERE reason = 'power loss'") == 4
        assert one("SELECT count(*) FROM job_events WHERE type = 'job.failed'") >= 1
    finally:
        con.close()
    # the same run again lands nothing new: same ids
    again = simulate(CONFIG, f"duckdb:{db}")
    assert again["landed"] == 0 and again["duplicates"] == summary["events"]


def test_null_and_memory_sinks_see_the_same_stream() -> None:
    memory = MemorySink()
    first = simulate(CONFIG, memory)
    second = simulate(CONFIG, "null:")
    assert len(memory.events) == first["events"] == second["events"]
    assert first["gpu_samples"] == sum(e.payload.rows for e in memory.events
                                       if isinstance(e.payload, c.GpuSampled))


def test_speed_paces_simulated_time_against_the_wall_clock() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    config = SimConfig(nodes=8, hours=0.05, scenario="quiet")  # 180 simulated seconds
    simulate(config, "null:", speed=60, sleep=sleep, clock=lambda: now[0])
    assert sum(slept) == pytest.approx(3.0, abs=0.01)
    assert len(slept) >= config.ticks - 1


def test_bad_targets_are_refused() -> None:
    for bad in ("kafka:", "s3://bucket", "duckdb", "jsonl:"):
        with pytest.raises(SimulationError, match="not a target"):
            parse_target(bad)
    assert parse_target("kafka://127.0.0.1:9092") == ("kafka", "127.0.0.1:9092")
    assert parse_target("null:") == ("null", "")


@pytest.mark.kafka
def test_events_land_in_the_real_broker_and_decode(kafka_settings: KafkaSettings, unique_name,
                                                   tmp_path: Path) -> None:
    prefix = unique_name("sim")
    summary = simulate(CONFIG, f"kafka://{kafka_settings.bootstrap}", topic_prefix=prefix)
    assert summary["messages"] == summary["events"]
    memory = MemorySink()
    simulate(CONFIG, memory)
    expected = {e.id: e for e in memory.events}
    topics = [c.topic_name(f, prefix) for f in ("inventory", "gpu", "net", "host", "jobs",
                                                "truth")]
    consumer = KafkaConsumer(*topics, **kafka_settings.client_kwargs(),
                             auto_offset_reset="earliest", group_id=unique_name("g"),
                             consumer_timeout_ms=10_000)
    received = 0
    try:
        for message in consumer:
            event = c.decode(message.value)
            assert isinstance(event, c.Envelope), event
            assert message.topic == c.topic_name(event.topic_family, prefix)
            assert message.key == event.key.encode()
            assert c.encode(event) == c.encode(expected[event.id])
            received += 1
            if received == len(expected):
                break
    finally:
        consumer.close()
    assert received == len(expected)
