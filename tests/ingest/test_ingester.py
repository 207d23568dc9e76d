"""Kafka -> DuckDB against the real broker: exactly once through duplicates, garbage, SIGKILL,
a broker restart and a killed member of a two-ingester group."""

from __future__ import annotations

import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from ingest_support import (
    OwnBroker,
    Producer,
    group_landed,
    ingest_cmd,
    job_event,
    rack_event,
    start,
    stop,
    store_counts,
    summary,
    wait_for,
    writer_processes,
)

from fleetlog.ingest.ingester import KafkaIngest, default_topics, ingest_kafka
from fleetlog.ingest.kafka import broker
from fleetlog.ingest.kafka.settings import KafkaSettings, resolve

pytestmark = [pytest.mark.kafka]


class Feed:
    """A producer thread that keeps writing events (every 9th twice) and garbage."""

    def __init__(self, settings: KafkaSettings, prefix: str, events: int, per_s: float) -> None:
        self.producer = Producer(settings, prefix)
        self.events, self.per_s = events, per_s
        self.sent = 0  # messages, duplicates and garbage included
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.stopping = threading.Event()  # stop() ends the feed early, between two events

    def stop(self) -> None:
        self.stopping.set()

    def _run(self) -> None:
        started = time.monotonic()
        for i in range(self.events):
            if self.stopping.is_set():
                break
            twice = i % 9 == 0
            self.producer.send(rack_event(i) if i % 4 else job_event(i), twice=twice)
            self.sent += 2 if twice else 1
            if i % 97 == 0:
                self.producer.send_garbage(1)
                self.sent += 1
            if i % 50 == 49:
                self.producer.publisher.flush()
                time.sleep(max(0.0, started + i / self.per_s - time.monotonic()))
        self.producer.close()

    def __enter__(self) -> Feed:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.join(120)


def _check_exactly_once(feeds: list[Feed], *dbs: Path) -> None:
    counts = store_counts(*dbs)
    ids = set().union(*(f.producer.ids for f in feeds))
    assert counts["distinct"] == len(ids), "an event was lost"
    assert counts["events"] == len(ids), "an event landed twice"
    assert counts["gpu_rows"] == 32 * sum(1 for i in ids if i.startswith("rack-"))
    garbage = sum(f.producer.garbage for f in feeds)
    assert counts["dead_letters"] == garbage, "a message was read twice (or lost)"


@pytest.mark.slow
@pytest.mark.parametrize("worker_process", [True, False], ids=["writer-process", "in-process"])
def test_duplicates_and_garbage_land_once_and_a_second_run_adds_nothing(
    kafka_settings: KafkaSettings, unique_name, db_path: Path, worker_process: bool,
):
    prefix = unique_name("ing")
    producer = Producer(kafka_settings, prefix)
    for i in range(400):
        producer.send(rack_event(i), twice=i % 7 == 0)
    for i in range(60):
        producer.send(job_event(i), twice=i % 5 == 0)
    producer.send_garbage(12)
    producer.close()
    job = KafkaIngest(db=db_path, topics=default_topics(prefix), group=unique_name("g"),
                      until_idle_s=2.0, batch_events=100, worker_process=worker_process)
    stats = ingest_kafka(job, kafka_settings)
    assert (stats.events, stats.duplicates, stats.dead_letters) == (460, 58 + 12, 12)
    assert stats.rows["gpu_samples_raw"] == 400 * 32
    assert stats.rows["job_events_raw"] == 60
    assert stats.stopped_by == "idle"
    assert store_counts(db_path) == {"events": 460, "distinct": 460, "gpu_rows": 12800,
                                     "dead_letters": 12}
    import duckdb

    con = duckdb.connect(str(db_path), read_only=True)
    origin, partition, offset, raw = con.execute(
        'SELECT origin, partition, "offset", raw FROM dead_letters ORDER BY raw LIMIT 1'
    ).fetchone()  # type: ignore[misc]
    con.close()
    assert (origin, raw) == (f"{prefix}.gpu", b"")
    assert partition in range(4) and offset >= 0
    for group in (job.group, unique_name("other-group")):  # the store, not Kafka, says where
        again = ingest_kafka(KafkaIngest(db=db_path, topics=job.topics, group=group,
                                         until_idle_s=1.0, worker_process=worker_process),
                             kafka_settings)
        assert (again.events, again.duplicates, again.dead_letters) == (0, 0, 0)


@pytest.mark.slow
def test_sigkill_in_the_middle_of_batches_loses_and_duplicates_nothing(
    kafka_bootstrap: str, kafka_settings: KafkaSettings, unique_name, tmp_path: Path,
):
    prefix, group, db = unique_name("kill"), unique_name("g"), tmp_path / "fleet.duckdb"
    log = tmp_path / "ingest.log"
    cmd = ingest_cmd(kafka_bootstrap, prefix, db, "--group", group, "--batch-events", "200",
                     "--session-timeout", "6", "--writer-process")  # which must die with it
    rng = random.Random(7)
    kills = 0
    # The feed runs until the third kill-and-restart round (however long a busy machine takes),
    # so every kill falls in the middle of a stream that is still being written.
    with Feed(kafka_settings, prefix, events=50_000, per_s=250) as feed:
        while kills < 3:
            process = start([*cmd, "--follow"], log)
            before = group_landed(db)

            def landed(process=process, before=before) -> bool:  # type: ignore[no-untyped-def]
                return group_landed(db) > before or process.poll() is not None

            wait_for(landed, 60, "the ingester to land a batch", every=0.05)
            time.sleep(rng.uniform(0.05, 0.6))  # somewhere in the middle of the next batches
            assert stop(process, signal.SIGKILL) == -signal.SIGKILL
            wait_for(lambda: not writer_processes(db), 10, "its writer process to die with it")
            kills += 1
        feed.stop()
    final = start([*cmd, "--until-idle", "3"], log)
    assert final.wait(120) == 0
    assert group_landed(db) == feed.sent
    _check_exactly_once([feed], db)
    assert summary(log)["stopped_by"] == "idle"


@pytest.mark.slow
def test_a_broker_restart_while_following_loses_nothing(unique_name, tmp_path: Path):
    own = OwnBroker(tmp_path / "kafka")
    own.up()
    try:
        settings = resolve(own.bootstrap, env={})
        prefix, db, log = unique_name("restart"), tmp_path / "fleet.duckdb", tmp_path / "i.log"
        with Feed(settings, prefix, events=600, per_s=2000) as first:
            pass
        process = start([*ingest_cmd(own.bootstrap, prefix, db, "--follow", "--in-process",
                                     "--broker-timeout", "120")], log)
        wait_for(lambda: group_landed(db) == first.sent, 60, "the first events to land")
        own.down()
        time.sleep(2)
        assert process.poll() is None, "the ingester must wait for the broker"
        own.up()
        with Feed(settings, prefix, events=600, per_s=2000) as second:
            pass
        # Events 0..599 again: same ids, so they land once; the offsets still count them.
        wait_for(lambda: group_landed(db) == first.sent + second.sent, 90,
                 "the events sent after the restart to land")
        assert stop(process) == 0
    finally:
        own.down()
    _check_exactly_once([first, second], db)
    assert summary(log)["duplicates"] == second.sent - second.producer.garbage + (
        first.sent - first.producer.garbage - 600)


@pytest.mark.slow
def test_two_ingesters_in_a_group_one_killed_land_every_event_once(
    kafka_bootstrap: str, kafka_settings: KafkaSettings, unique_name, tmp_path: Path,
):
    prefix, group = unique_name("pair"), unique_name("g")
    shards = tmp_path / "shards"
    shards.mkdir()
    dbs = [shards / "a.duckdb", shards / "b.duckdb"]
    extra = ("--group", group, "--batch-events", "100", "--session-timeout", "6", "--follow")
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    processes = [start(ingest_cmd(kafka_bootstrap, prefix, db, *extra), log)
                 for db, log in zip(dbs, logs, strict=True)]
    with Feed(kafka_settings, prefix, events=4000, per_s=500) as feed:
        wait_for(lambda: all(group_landed(db) > 0 for db in dbs), 40,
                 "both ingesters to land something")
        assert stop(processes[0], signal.SIGKILL) == -signal.SIGKILL  # halfway
    wait_for(lambda: group_landed(*dbs) == feed.sent, 90, "the survivor to land the rest")
    assert stop(processes[1], signal.SIGINT) == 0  # Ctrl-C: a clean stop
    _check_exactly_once([feed], *dbs)
    assert store_counts(dbs[0])["events"] > 0 and store_counts(dbs[1])["events"] > 0


@pytest.mark.slow
def test_cli_help_unreachable_broker_and_locked_store(tmp_path: Path, db_path: Path):
    result = subprocess.run([*ingest_cmd("127.0.0.1:1", "x", db_path)[:-1], "--help"],
                            capture_output=True, text=True, check=False)
    assert "Example:" in result.stdout
    port = broker.free_port()
    result = subprocess.run(ingest_cmd(f"127.0.0.1:{port}", "x", db_path, "--broker-timeout",
                                       "1"), capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert result.stderr.startswith(f"Error: cannot reach Kafka at 127.0.0.1:{port}")
    assert len(result.stderr.strip().splitlines()) == 1
    import duckdb

    holder = duckdb.connect(str(db_path))
    try:
        result = subprocess.run(ingest_cmd(f"127.0.0.1:{port}", "x", db_path),
                                capture_output=True, text=True, check=False)
    finally:
        holder.close()
    assert result.returncode == 3
    assert result.stderr.startswith("Error: ") and "is locked by another process" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# -- hostile input (issue #21) --------------------------------------------------------------------

@pytest.mark.parametrize("worker_process", [True, False], ids=["writer-process", "in-process"])
def test_hostile_messages_become_bounded_dead_letters_that_say_where_they_came_from(
    kafka_settings: KafkaSettings, unique_name, db_path: Path, worker_process: bool,
):
    """A forged event under a stored id, an event the store refuses, a 1 MiB id and a 10 MiB
    message: each is a dead letter with its topic, partition and offset, at most 4 KiB of it
    kept; the forgery is counted as a conflict, not as a duplicate; the sidecar stays small."""
    import duckdb

    from fleetlog.ingest import contract as c
    from fleetlog.ingest.contract.dead_letter import MAX_RAW
    from fleetlog.ingest.store.shards import sidecar_path

    prefix = unique_name("hostile")
    stored = c.make_event(c.XidReported(node="n1", gpu=1, xid=79), time_us=1_700_000_000_000_000,
                          source="t", id="xid-1")
    producer = Producer(kafka_settings, prefix)
    producer.send(stored)
    producer.close()

    def job() -> KafkaIngest:
        return KafkaIngest(db=db_path, topics=default_topics(prefix), group=unique_name("g"),
                           until_idle_s=2.0, batch_events=50, worker_process=worker_process)

    assert ingest_kafka(job(), kafka_settings).events == 1
    forged = c.make_event(c.XidReported(node="n1", gpu=1, xid=48), time_us=stored.time_us,
                          source="t", id="xid-1")
    refused = c.make_event(c.XidReported(node="n1", gpu=2, xid=2**40), time_us=stored.time_us,
                           source="t", id="xid-2")
    long_id = c.make_event(c.XidReported(node="n1", gpu=3, xid=79), time_us=stored.time_us,
                           source="t", id="i" * (1024 * 1024))
    huge = b"\x93" + b"x" * (10 * 1024 * 1024)
    producer = Producer(kafka_settings, prefix)
    for event in (forged, refused, long_id, job_event(1)):
        producer.send(event)
    gpu_topic = f"{prefix}.gpu"
    producer.publisher.send_raw(gpu_topic, b"huge", huge)
    producer.close()
    stats = ingest_kafka(job(), kafka_settings)
    assert (stats.events, stats.duplicates, stats.conflicts, stats.dead_letters) == (1, 0, 1, 4)
    con = duckdb.connect(str(db_path), read_only=True)
    letters = con.execute('SELECT stage, event_id, origin, partition, "offset", error, raw '
                          "FROM dead_letters ORDER BY stage, event_id").fetchall()
    kept = con.execute("SELECT xid FROM xid_events").fetchall()
    con.close()
    assert kept == [(79,)]
    xid_topic = f"{prefix}.{stored.topic_family}"
    assert [(s, i, o) for s, i, o, *_ in letters] == [
        ("conflict", "xid-1", xid_topic), ("envelope", None, xid_topic),
        ("envelope", None, gpu_topic), ("validate", "xid-2", xid_topic)]
    for _, _, _, partition, offset, _, raw in letters:
        assert partition in range(4) and offset >= 0
        assert len(raw) <= MAX_RAW
    errors = {(s, o): e for s, _, o, _, _, e, _ in letters}
    assert "already stored with different content (payload differ)" in errors[
        ("conflict", xid_topic)]
    assert "$.id" in errors[("envelope", xid_topic)]
    assert f"input of {len(huge):,} bytes: the first 4,096 kept" in errors[
        ("envelope", gpu_topic)]
    assert sidecar_path(db_path).stat().st_size < 10_000
