"""Helpers for the ingest tests: realistic events, garbage, ingester subprocesses, store counts,
a broker of a test's own to stop and start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import duckdb
import numpy as np

from fleetlog.ingest import contract as c
from fleetlog.ingest.kafka import broker
from fleetlog.ingest.kafka.producer import Publisher
from fleetlog.ingest.kafka.settings import KafkaSettings
from fleetlog.ingest.store.shards import read_sidecar

ROOT = Path(__file__).resolve().parents[2]
NODES = [f"n{i:04d}" for i in range(4)]


def rack_event(i: int, rng: np.random.Generator | None = None) -> c.Envelope:
    """A gpu.sampled batch of one rack (4 nodes x 8 GPUs, all 14 signals)."""
    rng = rng or np.random.default_rng(i)
    columns = {s.column: rng.random(32) * 100 for s in c.GPU_SIGNALS}
    payload = c.gpu_batch(NODES, [8] * 4, list(range(8)) * 4, columns)
    return c.make_event(payload, time_us=1_700_000_000_000_000 + i * 1_000, source="test",
                        id=f"rack-{i:08d}", key=f"rack:r{i % 13}")


def job_event(i: int) -> c.Envelope:
    return c.make_event(
        c.JobStepReported(job=f"j{i % 5}", step=i, step_time_s=1.5, tokens_per_s=1e5),
        time_us=1_700_000_000_000_000 + i, source="test", id=f"job-{i:08d}")


GARBAGE = [b"\x93not msgpack", b"{\"id\": 1}", b"", b"\xc1"]


# A test that stops its broker starts one of its own: on this port and the next when set (so a
# developer on a shared machine keeps to the ports they were given), else on two free ports.
OWN_BROKER_PORT_ENV = "FLEETLOG_TEST_OWN_BROKER_PORT"


class OwnBroker:
    """A local broker a test starts, stops and starts again (same data, same ports)."""

    def __init__(self, data_dir: Path) -> None:
        given = os.environ.get(OWN_BROKER_PORT_ENV)
        self.port = int(given) if given else broker.free_port()
        self.controller_port = self.port + 1 if given else broker.free_port()
        self.data_dir = data_dir
        self.bootstrap = f"127.0.0.1:{self.port}"

    def up(self) -> None:
        broker.up(self.data_dir, port=self.port, controller_port=self.controller_port)

    def down(self) -> None:
        broker.down(self.data_dir)


def create_topics(settings: KafkaSettings, prefix: str, partitions: int = 4) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(**settings.client_kwargs())
    try:
        admin.create_topics([NewTopic(t, partitions, 1) for t in c.all_topics(prefix)])
    except TopicAlreadyExistsError:
        pass
    finally:
        admin.close()


class Producer:
    """Sends events (some twice) and garbage to the fleetlog topics of ``prefix``."""

    def __init__(self, settings: KafkaSettings, prefix: str) -> None:
        create_topics(settings, prefix)
        self.publisher = Publisher(settings, topic_prefix=prefix,
                                   tuning={"linger_ms": 5, "batch_size": 262_144})
        self.prefix = prefix
        self.ids: set[str] = set()
        self.garbage = 0
        self.gpu_events = 0

    def send(self, event: c.Envelope, *, twice: bool = False) -> None:
        self.publisher.send(event)
        if twice:
            self.publisher.send(event)
        self.ids.add(event.id)
        self.gpu_events += isinstance(event.payload, c.GpuSampled)

    def send_garbage(self, n: int) -> None:
        topic = c.topic_name("gpu", self.prefix)
        for k in range(n):
            self.publisher.send_raw(topic, b"junk", GARBAGE[(self.garbage + k) % len(GARBAGE)])
        self.garbage += n

    def close(self) -> None:
        self.publisher.close()


def ingest_cmd(bootstrap: str, prefix: str, db: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "fleetlog", "ingest", "--bootstrap", bootstrap,
            "--topic-prefix", prefix, "--db", str(db), "--json", *extra]


def start(cmd: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("FLEETLOG_TOPIC_PREFIX", None)
    with log.open("ab") as out:
        return subprocess.Popen(list(cmd), cwd=ROOT, env=env, stdout=out, stderr=out)


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 60) -> int:
    if process.poll() is None:
        process.send_signal(sig)
    return process.wait(timeout)


def landed_offsets(db: Path) -> int:
    """Records landed so far by the ingester of ``db`` (its sidecar, readable while it runs)."""
    sidecar = read_sidecar(db)
    return sum(sidecar[1].values()) if sidecar else 0


def wait_for(condition, timeout: float, what: str, every: float = 0.3) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def store_counts(*dbs: Path) -> dict[str, int]:
    """Totals over shards: events, distinct ids, GPU sample rows, dead letters."""
    totals = {"events": 0, "gpu_rows": 0, "dead_letters": 0}
    ids: list[str] = []
    for db in dbs:
        con = duckdb.connect(str(db), read_only=True)
        try:
            ids += [r[0] for r in con.execute("SELECT event_id FROM event_log").fetchall()]
            totals["gpu_rows"] += con.execute("SELECT count(*) FROM gpu_samples").fetchone()[0]  # type: ignore[index]
            totals["dead_letters"] += con.execute(
                "SELECT count(*) FROM dead_letters").fetchone()[0]  # type: ignore[index]
        finally:
            con.close()
    totals["events"] = len(ids)
    totals["distinct"] = len(set(ids))
    return totals


def summary(log: Path) -> dict[str, object]:
    """The last --json summary an ingester wrote to its log."""
    text = log.read_text("utf-8", errors="replace")
    start_at = 0 if text.startswith("{\n") else text.rfind("\n{\n") + 1
    end_at = text.find("\n}", start_at)
    return json.loads(text[start_at:end_at + 2]) if start_at > 0 or text.startswith("{") else {}


def group_landed(*dbs: Path) -> int:
    """Records landed by a group of shards: per partition the furthest offset of any shard."""
    best: dict[tuple[str, int], int] = {}
    for db in dbs:
        offsets: dict[tuple[str, int], int] = {}
        try:
            con = duckdb.connect(str(db), read_only=True)
        except duckdb.Error:  # locked by its running ingester: read its sidecar
            sidecar = read_sidecar(db)
            offsets = sidecar[1] if sidecar else {}
        else:
            try:
                rows = con.execute("SELECT topic, partition, next_offset FROM ingest_offsets")
                offsets = {(t, p): o for t, p, o in rows.fetchall()}
            except duckdb.Error:
                offsets = {}
            finally:
                con.close()
        for tp, offset in offsets.items():
            best[tp] = max(best.get(tp, 0), offset)
    return sum(best.values())


def writer_processes(db: Path) -> list[int]:
    """Pids of `ingest.worker` processes writing ``db`` (read from /proc, for assertions)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"fleetlog.ingest.worker" in args and str(db).encode() in args:
            pids.append(int(cmdline.parent.name))
    return pids
