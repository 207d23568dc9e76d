"""One measurement each, against a running broker: every step runs the real command (or Kafka's
own tool) in its own process and returns a flat dict of what it measured.

``suite.py`` composes these into the benchmark plan; nothing here decides sizes or repeats.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for p in (str(ROOT), str(BENCH)):
    if p not in sys.path:
        sys.path.insert(0, p)

import machine  # noqa: E402
from kafka_ceiling import consumer_ceiling, producer_ceiling  # noqa: E402

from fleetlog.ingest import contract as c  # noqa: E402

PY = sys.executable
FLEETLOG = [PY, "-m", "fleetlog"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}


class StepFailed(RuntimeError):
    """A measured command exited non-zero; the message carries the end of its stderr."""


def _json_out(timed: machine.Timed, what: str) -> dict[str, Any]:
    if timed.returncode != 0:
        raise StepFailed(f"{what} exited {timed.returncode}: {timed.stderr.strip()[-800:]}")
    try:  # one JSON document (indented or not), else the last line
        return dict(json.loads(timed.stdout))
    except json.JSONDecodeError:
        pass
    lines = [line for line in timed.stdout.strip().splitlines() if line.strip()]
    try:
        return dict(json.loads(lines[-1]))
    except (json.JSONDecodeError, IndexError) as exc:
        raise StepFailed(f"{what}: no JSON in its output: {timed.stdout[-400:]}") from exc


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of every numeric field over the runs (nested dicts of numbers too)."""
    if not runs:
        return {}
    out: dict[str, Any] = {}
    for key, value in runs[0].items():
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            values = [r[key] for r in runs if isinstance(r.get(key), int | float)]
            out[key] = round(median(values), 4)
        elif isinstance(value, dict) and all(isinstance(v, int | float) for v in value.values()):
            out[key] = summarize([r[key] for r in runs if isinstance(r.get(key), dict)])
    return out


# ------------------------------------------------------------------------------------------
# Kafka plumbing


def create_topics(bootstrap: str, prefix: str, partitions: int) -> None:
    """Every fleetlog topic of ``prefix`` with ``partitions`` partitions (before producing)."""
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","))
    try:
        admin.create_topics([NewTopic(c.topic_name(f, prefix), partitions, 1)
                             for f in c.TOPIC_FAMILIES])
    finally:
        admin.close()


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","))
    try:
        admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        admin.close()


def delete_topics(bootstrap: str, topics: list[str]) -> None:
    """Delete ``topics`` once measured: a run's copies would otherwise fill the broker's disk
    (a broker whose log folder fills up shuts down). One never created is no error: this runs
    in clean-up, where it must not hide why the run stopped."""
    from kafka.admin import KafkaAdminClient
    from kafka.errors import UnknownTopicOrPartitionError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","))
    try:
        admin.delete_topics(topics)
    except UnknownTopicOrPartitionError:
        pass
    finally:
        admin.close()


def topic_messages(bootstrap: str, topic: str) -> int:
    """Messages in a fresh topic (the sum of its partitions' end offsets)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap.split(","))
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        return int(sum(consumer.end_offsets(parts).values()))
    finally:
        consumer.close()


def topic_bytes(data_dir: Path, topic: str) -> int:
    """Bytes the broker holds for ``topic`` (its log segments on disk)."""
    total = 0
    for folder in (data_dir / "logs").glob(f"{topic}-*"):
        total += sum(f.stat().st_size for f in folder.glob("*.log"))
    return total


# ------------------------------------------------------------------------------------------
# Producing


def simulate(nodes: int, hours: float, target: str, *, prefix: str | None = None,
             seed: int = 1, fault_rate: float = 1.0, scenario: str = "llama3",
             speed: float = 0.0) -> dict[str, Any]:
    """``fleetlog simulate`` to ``target``: the generator's own summary plus process figures."""
    command = [*FLEETLOG, "simulate", "--nodes", str(nodes), "--duration", f"{hours}h", "--seed",
               str(seed), "--scenario", scenario, "--fault-rate", str(fault_rate),
               "--speed", str(speed), "--to", target, "--json"]
    if prefix:
        command += ["--topic-prefix", prefix]
    load = machine.load()
    timed = machine.run_timed(command, cwd=ROOT, env=ENV)
    out = _json_out(timed, "fleetlog simulate")
    wall = float(out.get("wall_s") or timed.wall_s)
    result = {
        "load": load, "nodes": nodes, "hours": hours, "events": out.get("events"),
        "gpu_samples": out.get("gpu_samples"), "port_samples": out.get("port_samples"),
        "faults": out.get("faults"), "wall_s": wall, "process_wall_s": timed.wall_s,
        "cpu_s": timed.cpu_s, "gpu_samples_per_s": round(out["gpu_samples"] / wall),
        "events_per_s": round(out["events"] / wall), "peak_rss_mb": timed.peak_rss_mb,
    }
    if "messages" in out:
        result["messages"] = out["messages"]
        result["bytes"] = out["bytes"]
        result["messages_per_s"] = round(out["messages"] / wall)
        result["mb_per_s"] = round(out["bytes"] / wall / 1e6, 2)
        result["record_size"] = round(out["bytes"] / max(out["messages"], 1))
    return result


def producer_perf(bootstrap: str, topic: str, records: int, size: int) -> dict[str, Any]:
    """Kafka's kafka-producer-perf-test: ``records`` of ``size`` bytes, flat out."""
    load = machine.load()
    started = time.perf_counter()
    out = producer_ceiling(bootstrap, topic, records, size)
    return {"load": load, "records": records, "record_size": size,
            "messages_per_s": round(out["records_per_s"]),
            "mb_per_s": round(out["records_per_s"] * size / 1e6, 2),
            "tool_wall_s": round(time.perf_counter() - started, 2)}


# ------------------------------------------------------------------------------------------
# Landing


def ingest(bootstrap: str, prefix: str, db: Path, *, topics: str | None = None,
           group: str | None = None, idle_s: float = 2.0, batch_events: int | None = None,
           ) -> dict[str, Any]:
    """``fleetlog ingest --until-idle`` into a fresh store with a fresh group (reads it all)."""
    command = [*FLEETLOG, "ingest", "--bootstrap", bootstrap, "--topic-prefix", prefix,
               "--db", str(db), "--group", group or f"bench-{uuid.uuid4().hex[:8]}",
               "--until-idle", str(idle_s), "--json"]
    if topics:
        command += ["--topics", topics]
    if batch_events:
        command += ["--batch-events", str(batch_events)]
    load = machine.load()
    timed = machine.run_timed(command, cwd=ROOT, env=ENV)
    out = _json_out(timed, "fleetlog ingest")
    rows = out.get("rows", {})
    sample_rows = int(rows.get("gpu_samples_raw", 0)) + int(rows.get("port_samples_raw", 0))
    active = float(out.get("active_s") or 0.0) or 1e-9
    return {
        "load": load, "events": out.get("events"), "gpu_samples": out.get("gpu_samples"),
        "sample_rows": sample_rows, "active_s": active, "elapsed_s": out.get("elapsed_s"),
        "process_wall_s": timed.wall_s,
        "cpu_s": timed.cpu_s, "gpu_samples_per_s": round(out.get("gpu_samples", 0) / active),
        "events_per_s": round(out.get("events", 0) / active),
        "sample_rows_per_s": round(sample_rows / active),
        "write_s": out.get("write_s"), "writer_wait_s": out.get("writer_wait_s"),
        "peak_rss_mb": timed.peak_rss_mb,
        "duplicates": out.get("duplicates"), "dead_letters": out.get("dead_letters"),
        "db_bytes": db.stat().st_size if db.exists() else None,
    }


def landing_client(client: str, bootstrap: str, topic: str, db: Path, messages: int,
                   ) -> dict[str, Any]:
    """bench/landing.py's hand-written confluent-kafka consumer or quixstreams app."""
    load = machine.load()
    timed = machine.run_timed([PY, str(BENCH / "landing.py"), client, "--bootstrap", bootstrap,
                               "--topic", topic, "--db", str(db), "--messages", str(messages)],
                              cwd=ROOT, env=ENV)
    out = _json_out(timed, f"landing.py {client}")
    return {**out, "load": load, "process_wall_s": timed.wall_s,
            "peak_rss_mb": timed.peak_rss_mb}


def consumer_perf(bootstrap: str, topic: str, records: int, samples_per_message: float,
                  ) -> dict[str, Any]:
    """Kafka's kafka-consumer-perf-test over the same topic: the ceiling for any consumer."""
    load = machine.load()
    out = consumer_ceiling(bootstrap, topic, records)
    return {"load": load, "messages_per_s": round(out["records_per_s"]),
            "mb_per_s": round(out["mb_per_s"], 2),
            "gpu_samples_per_s": round(out["records_per_s"] * samples_per_message)}


# ------------------------------------------------------------------------------------------
# Analysis


def analyze(db: Path) -> dict[str, Any]:
    """``fleetlog analyze --no-write`` (batch, whole store): its stage timings and the process."""
    load = machine.load()
    timed = machine.run_timed([*FLEETLOG, "analyze", "--db", str(db), "--no-write", "--json"],
                              cwd=ROOT, env=ENV)
    out = _json_out(timed, "fleetlog analyze")
    seconds = dict(out.get("seconds", {}))
    return {"load": load, "total_s": seconds.get("total"), "process_wall_s": timed.wall_s,
            "cpu_s": timed.cpu_s, "peak_rss_mb": timed.peak_rss_mb,
            "incidents": out.get("incidents"), "findings": out.get("findings"),
            "stages": seconds}


def detections(db: Path, engine: str) -> dict[str, Any]:
    """bench/polars_detect.py: ``polars`` (timed, with its detections) or ``fleetlog``'s
    findings of the same kinds."""
    load = machine.load()
    timed = machine.run_timed([PY, str(BENCH / "polars_detect.py"), "--db", str(db),
                               "--engine", engine, "--detections"], cwd=ROOT, env=ENV)
    out = _json_out(timed, f"polars_detect.py --engine {engine}")
    seconds = dict(out.get("seconds", {}))
    return {"load": load, "total_s": seconds.get("total") or seconds.get("wall"),
            "process_wall_s": timed.wall_s, "cpu_s": timed.cpu_s,
            "peak_rss_mb": timed.peak_rss_mb, "stages": seconds,
            "detections": out.get("detections", [])}


def store_rows(db: Path) -> dict[str, int]:
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        row = con.execute("SELECT (SELECT count(*) FROM gpu_samples_raw), "
                          "(SELECT count(*) FROM port_samples_raw), "
                          "(SELECT count(*) FROM event_log)").fetchone()
    finally:
        con.close()
    assert row is not None
    return {"gpu_rows": int(row[0]), "port_rows": int(row[1]), "events": int(row[2])}


# ------------------------------------------------------------------------------------------
# Scale-out and memory over time


def read_topic(bootstrap: str, topic: str, expected: int) -> list[tuple[bytes | None, bytes]]:
    """Every (key, value) of ``topic`` (confluent-kafka, into memory)."""
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"copy-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    out: list[tuple[bytes | None, bytes]] = []
    deadline = time.monotonic() + 600
    while len(out) < expected and time.monotonic() < deadline:
        for m in consumer.consume(num_messages=10_000, timeout=1.0):
            if m.error() is None:
                out.append((m.key(), m.value()))
    consumer.close()
    return out


def copy_into(bootstrap: str, topic: str, messages: list[tuple[bytes | None, bytes]]) -> float:
    """Produce ``messages`` (keys kept, so the same partitioning) as fast as librdkafka can."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20,
                         "batch.size": 1_000_000, "queue.buffering.max.kbytes": 1_048_576})
    started = time.perf_counter()
    for key, value in messages:
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(120)
    return time.perf_counter() - started


def group_stable(bootstrap: str, group: str, members: int, partitions: int,
                 timeout_s: float = 90.0) -> float:
    """Wait until ``group`` is Stable with ``members`` members holding ``partitions``
    partitions in all; returns the seconds waited."""
    from confluent_kafka import ConsumerGroupState
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        try:
            desc = admin.describe_consumer_groups([group])[group].result(timeout=10)
            held = sum(len(m.assignment.topic_partitions) for m in desc.members
                       if m.assignment is not None)
            if (desc.state == ConsumerGroupState.STABLE and len(desc.members) == members
                    and held == partitions):
                return time.monotonic() - started
        except Exception:  # the group does not exist yet
            pass
        time.sleep(0.25)
    raise StepFailed(f"consumer group {group} did not settle on {members} members within "
                     f"{timeout_s:.0f} s")


def _landed_offsets(dbs: list[Path], topic: str) -> int:
    """Messages of ``topic`` the shards have committed: from each shard's ``.offsets.json``
    (rewritten after every commit), the furthest next offset of each partition, summed."""
    best: dict[int, int] = {}
    for db in dbs:
        try:
            body = json.loads(db.with_name(db.name + ".offsets.json").read_text())
        except (OSError, json.JSONDecodeError):
            continue
        for t, part, offset in body.get("offsets", []):
            if t == topic:
                best[part] = max(best.get(part, 0), int(offset))
    return sum(best.values())


def scaleout(bootstrap: str, messages: list[tuple[bytes | None, bytes]], folder: Path,
             ingesters: int, expected: int, partitions: int) -> dict[str, Any]:
    """``ingesters`` x ``fleetlog ingest --group G`` (own --db each) on one gpu topic.

    The ingesters start (following) on an empty topic; once the group is stable (every
    partition assigned), the main point's gpu messages are copied in at full speed, so the
    measurement holds no start-up or rebalance. When the shards' offsets say every message is
    landed, they are stopped (SIGTERM). Aggregate rate = GPU samples landed / span, from the
    earliest first record to the latest last commit (an ingester's last commit is when it last
    rewrote its ``.offsets.json``; its first record that less its own ``active_s``)."""
    folder.mkdir(parents=True, exist_ok=True)
    prefix = f"so{uuid.uuid4().hex[:6]}"
    topic = c.topic_name("gpu", prefix)
    create_topic(bootstrap, topic, partitions)
    group = f"bench-scale-{uuid.uuid4().hex[:8]}"
    dbs = [folder / f"shard-{i}.duckdb" for i in range(ingesters)]
    procs, samplers = [], []
    for db in dbs:
        command = [*FLEETLOG, "ingest", "--bootstrap", bootstrap, "--topic-prefix", prefix,
                   "--topics", "gpu", "--group", group, "--db", str(db), "--json"]
        p = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        procs.append(p)
        samplers.append(machine.RssSampler(p.pid, every_s=0.5).start())
    done = False
    try:
        settle_s = group_stable(bootstrap, group, ingesters, partitions)
        load = machine.load()
        copy_started = time.time()
        copy_s = copy_into(bootstrap, topic, messages)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not done:
            done = _landed_offsets(dbs, topic) >= len(messages)
            if any(p.poll() is not None for p in procs):
                break
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        outputs = [p.communicate(timeout=120) for p in procs]
        for s in samplers:
            s.stop()
        delete_topics(bootstrap, [topic])
    shards = []
    for i, p in enumerate(procs):
        if p.returncode != 0:
            raise StepFailed(f"ingester {i} exited {p.returncode}: {outputs[i][1][-800:]}")
        out = json.loads(outputs[i][0])
        active = float(out.get("active_s") or 0.0)
        _start, end = shard_window(dbs[i], active, copy_started)
        shards.append({"gpu_samples": out.get("gpu_samples", 0), "active_s": active,
                       "gpu_samples_per_s": out.get("gpu_samples_per_s"),
                       "start_s": round(end - active - copy_started, 3),
                       "end_s": round(end - copy_started, 3),
                       "peak_rss_mb": samplers[i].peak_mb})
    landed, span = group_span([(s["gpu_samples"], s["start_s"], s["end_s"]) for s in shards])
    return {"load": load, "ingesters": ingesters, "gpu_samples": landed,
            "complete": landed == expected and done, "span_s": round(span, 3),
            "gpu_samples_per_s": round(landed / max(span, 1e-9)),
            "group_settle_s": round(settle_s, 2), "copy_s": round(copy_s, 3),
            "peak_rss_mb_per_ingester": round(max(s["peak_rss_mb"] for s in shards), 1),
            "shards": shards}


def group_backlog(bootstrap: str, prefix: str, folder: Path, members: int, expected: int,
                  *extra: str, idle_s: float = 5.0) -> dict[str, Any]:
    """``members`` x ``fleetlog ingest --group G --until-idle`` (own file each) started together
    on the gpu topic of ``prefix``, already full: a backlog, as after an outage. Aggregate rate =
    GPU samples landed by all / span from the earliest first record to the latest last commit
    (``shard_window``); the rebalances as members join are inside the span."""
    folder.mkdir(parents=True, exist_ok=True)
    group = f"bench-backlog-{uuid.uuid4().hex[:8]}"
    dbs = [folder / f"shard-{i}.duckdb" for i in range(members)]
    load = machine.load()
    procs = [subprocess.Popen(
        [*FLEETLOG, "ingest", "--bootstrap", bootstrap, "--topic-prefix", prefix, "--topics",
         "gpu", "--db", str(db), "--until-idle", str(idle_s), "--group", group, "--json",
         *extra], cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for db in dbs]
    outputs = [p.communicate(timeout=900) for p in procs]
    shards = []
    for i, (p, (out, err)) in enumerate(zip(procs, outputs, strict=True)):
        if p.returncode != 0:
            raise StepFailed(f"ingester {i} of the group exited {p.returncode}: {err[-800:]}")
        stats = json.loads(out)
        start, end = shard_window(dbs[i], float(stats.get("active_s") or 0.0), time.time())
        shards.append({"gpu_samples": int(stats.get("gpu_samples") or 0), "start": start,
                       "end": end, "peak_rss_mb": stats.get("peak_rss_mb")})
    landed, span = group_span([(s["gpu_samples"], s["start"], s["end"]) for s in shards])
    return {"load": load, "ingesters": members, "gpu_samples": landed,
            "complete": landed == expected, "span_s": round(span, 3),
            "gpu_samples_per_s": round(landed / max(span, 1e-9)),
            "per_member_gpu_samples": [s["gpu_samples"] for s in shards],
            "peak_rss_mb_per_ingester": max((s["peak_rss_mb"] or 0.0) for s in shards)}


def group_span(shards: list[tuple[int, float, float]]) -> tuple[int, float]:
    """(GPU samples landed, seconds from the earliest first record to the latest last commit)
    of a group's shards, each (samples, first record, last commit); idle shards do not count."""
    busy = [(start, end) for samples, start, end in shards if samples]
    landed = sum(samples for samples, _start, _end in shards)
    span = max(e for _s, e in busy) - min(s for s, _e in busy) if busy else 0.0
    return landed, span


def shard_window(db: Path, active_s: float, fallback_end: float) -> tuple[float, float]:
    """(first record, last commit) of one ingester of a group, in wall-clock seconds: its last
    commit is its sidecar's last rewrite, its first record that less its ``active_s``."""
    sidecar = db.with_name(db.name + ".offsets.json")
    end = sidecar.stat().st_mtime if sidecar.exists() else fallback_end
    return end - active_s, end


def soak(bootstrap: str, folder: Path, seconds: float, nodes: int, speed: float,
         every_s: float) -> dict[str, Any]:
    """An ingester following a live, paced stream for ``seconds``: its RSS every ``every_s``."""
    folder.mkdir(parents=True, exist_ok=True)
    prefix = f"soak-{uuid.uuid4().hex[:6]}"
    create_topics(bootstrap, prefix, 8)
    hours = round(seconds * speed / 3600 * 1.05 + 0.01, 3)
    load = machine.load()
    generator = subprocess.Popen(
        [*FLEETLOG, "simulate", "--nodes", str(nodes), "--duration", f"{hours}h", "--speed",
         str(speed), "--to", f"kafka://{bootstrap}", "--topic-prefix", prefix, "--json"],
        cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ingester = subprocess.Popen(
        [*FLEETLOG, "ingest", "--bootstrap", bootstrap, "--topic-prefix", prefix, "--db",
         str(folder / "soak.duckdb"), "--json"],
        cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    samples: list[tuple[float, float]] = []
    started = time.monotonic()
    try:
        while (now := time.monotonic() - started) < seconds:
            if ingester.poll() is not None:
                raise StepFailed(f"the soak ingester exited early: {ingester.stderr.read()[-800:]}"
                                 if ingester.stderr else "the soak ingester exited early")
            samples.append((round(now, 1), round(machine.tree_rss_mb(ingester.pid), 1)))
            time.sleep(max(0.0, every_s - (time.monotonic() - started - now)))
    finally:
        ingester.send_signal(signal.SIGTERM)
        try:
            out, _err = ingester.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            ingester.kill()
            out, _err = ingester.communicate()
        generator.send_signal(signal.SIGTERM)
        try:
            generator.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            generator.kill()
            generator.communicate()
    stats: dict[str, Any] = {}
    with contextlib.suppress(json.JSONDecodeError):
        stats = json.loads(out)
    lag = stats.get("lag")
    lag_total = sum(v for v in lag.values() if isinstance(v, int)) if isinstance(lag, dict) \
        else lag
    return {"load": load, "seconds": seconds, "nodes": nodes, "speed": speed,
            "every_s": every_s, "samples": samples, "fit": rss_fit(samples, seconds),
            "events": stats.get("events"), "gpu_samples": stats.get("gpu_samples"),
            "lag_at_stop": lag_total,
            "db_bytes": (folder / "soak.duckdb").stat().st_size
            if (folder / "soak.duckdb").exists() else None}


def rss_fit(samples: list[tuple[float, float]], seconds: float) -> dict[str, Any]:
    """Least-squares slope of RSS over time after a warm-up of 10% of the run (at least one
    sample interval), in MiB per minute; plus first/last/peak of that part."""
    warm = max(seconds * 0.1, 1.0)
    part = [(t, mb) for t, mb in samples if t >= warm]
    if len(part) < 3:
        return {"warmup_s": warm, "points": len(part)}
    xs = [t / 60 for t, _ in part]
    ys = [mb for _, mb in part]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    return {"warmup_s": warm, "points": len(part), "slope_mb_per_min": round(slope, 3),
            "intercept_mb": round(my - slope * mx, 1), "first_mb": ys[0], "last_mb": ys[-1],
            "peak_mb": max(ys), "mean_mb": round(my, 1),
            "growth_mb": round(slope * (xs[-1] - xs[0]), 1)}
