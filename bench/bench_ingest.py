"""End-to-end ingestion rate through a real broker, against the raw consume rate of the clients.

Produces N ``gpu.sampled`` messages to a fresh topic — by default the generator's own (a simulated
2,048-node llama3 fleet, one message per rack scrape: 4 nodes x 8 GPUs, 14 signals; ``--source
synthetic`` builds messages of the same shape without the simulator) — then reads that same topic:

1. kafka-python alone (no decode, no DuckDB), with fleetlog's fetch settings;
2. confluent-kafka alone (``pip install '.[bench]'``), when installed;
3. ``fleetlog ingest`` in a subprocess (fresh store, its own group) until idle, as it runs by
   default (a writer thread) and with ``--writer-process``: events/s and GPU
   samples/s from its first record to its last commit, its peak RSS, and writer timings;
4. optionally (``--profile``) the same ingest under cProfile, printing the top functions;
5. optionally (``--stages``) the writer's steps one by one, without Kafka, at 4,096 events per
   transaction and at the default: CPU us per event per step and bytes on disk per GPU sample;
6. optionally (``--group-of N``) N ingesters in one consumer group sharing the topic's
   partitions, started together: their aggregate rate, rebalances included.

Not a test: it prints one JSON document. Run it once or twice on a quiet machine:

    FLEETLOG_KAFKA_BOOTSTRAP=127.0.0.1:29092 .venv/bin/python bench/bench_ingest.py --events 60000
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fleetlog.ingest import contract as c  # noqa: E402
from fleetlog.ingest.kafka.consumer import ConsumerTuning  # noqa: E402
from fleetlog.ingest.kafka.producer import Publisher  # noqa: E402
from fleetlog.ingest.kafka.settings import resolve  # noqa: E402
from fleetlog.ingest.pipeline import DEFAULT_BATCH_EVENTS, fewer_gc_passes  # noqa: E402

RACKS = 256
GPUS = 32  # 4 nodes x 8 GPUs


def rack_scrapes(n: int, seed: int = 0) -> list[bytes]:
    """``n`` encoded gpu.sampled events: RACKS racks scraped every 10 s, realistic values."""
    rng = np.random.default_rng(seed)
    sbe = np.zeros((RACKS, GPUS))
    out: list[bytes] = []
    t0 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
    for i in range(n):
        rack, scrape = i % RACKS, i // RACKS
        nodes = [f"r{rack:03d}n{k}" for k in range(4)]
        sbe[rack] += rng.random(GPUS) < 0.001
        throttled = rng.random(GPUS) < 0.02
        columns = {
            "util_pct": np.clip(rng.normal(96, 3, GPUS), 0, 100).round(),
            "sm_clock_mhz": np.where(throttled, 1410.0, 1980.0),
            "gpu_temp_c": rng.normal(66, 4, GPUS).round(),
            "mem_temp_c": rng.normal(74, 4, GPUS).round(),
            "power_w": rng.normal(640, 35, GPUS).round(1),
            "fb_used_mib": rng.normal(71_500, 400, GPUS).round(),
            "ecc_sbe_vol_total": sbe[rack].copy(),
            "ecc_dbe_vol_total": np.zeros(GPUS),
            "sram_ecc_total": np.zeros(GPUS),
            "row_remap_pending": np.zeros(GPUS),
            "row_remap_failure": np.zeros(GPUS),
            "nvlink_crc_flit_errors": np.floor(scrape * rng.random(GPUS) * 0.01),
            "pcie_replays": np.zeros(GPUS),
            "throttle_reasons": np.where(throttled, float(c.THROTTLE_SW_THERMAL), 0.0),
        }
        payload = c.gpu_batch(nodes, [8] * 4, list(range(8)) * 4, columns)
        event = c.make_event(payload, time_us=t0 + scrape * 10_000_000 + rack * 1_000,
                             source="bench", key=f"rack:r{rack:03d}")
        out.append(c.encode(event))
    return out


def generator_scrapes(n: int, nodes: int = 2048, seed: int = 1) -> list[bytes]:
    """The first ``n`` gpu.sampled messages of a simulated llama3 fleet, encoded as published."""
    from fleetlog.generators.config import SimConfig
    from fleetlog.generators.simulator import Simulator

    hours = n / (nodes // 4) * 10 / 3600 + 0.01  # one rack message per 10 s scrape
    out: list[bytes] = []
    for chunk in Simulator(SimConfig(nodes=nodes, hours=hours, seed=seed)).chunks():
        out += [c.encode(e) for e in chunk if e.type == c.GpuSampled.TYPE]
        if len(out) >= n:
            break
    return out[:n]


def produce(bootstrap: str, topic: str, values: list[bytes], partitions: int) -> float:
    from kafka.admin import KafkaAdminClient, NewTopic

    settings = resolve(bootstrap, env={})
    admin = KafkaAdminClient(**settings.client_kwargs())
    admin.create_topics([NewTopic(topic, partitions, 1)])
    admin.close()
    started = time.perf_counter()
    with Publisher(settings) as publisher:
        for i, value in enumerate(values):
            publisher.send_raw(topic, f"rack:r{i % RACKS:03d}".encode(), value)
    return time.perf_counter() - started


def raw_kafka_python(bootstrap: str, topic: str, n: int, per_message: float) -> dict[str, Any]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap.split(","),
                             group_id=f"bench-raw-{uuid.uuid4().hex[:8]}",
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             **ConsumerTuning().kwargs())
    got, first, cpu = 0, None, 0.0
    while got < n:
        records = consumer.poll(timeout_ms=1000)
        if records and first is None:
            first, cpu = time.perf_counter(), time.process_time()
        got += sum(len(r) for r in records.values())
    elapsed = time.perf_counter() - (first or time.perf_counter())
    cpu = time.process_time() - cpu
    consumer.close(autocommit=False)
    return {**_rates(got, elapsed, per_message), "cpu_us_per_message": round(cpu / got * 1e6, 1)}


def _rates(got: int, elapsed: float, per_message: float) -> dict[str, Any]:
    return {"messages": got, "seconds": round(elapsed, 3), "messages_per_s": round(got / elapsed),
            "gpu_samples_per_s": round(got * per_message / elapsed)}


def raw_confluent(bootstrap: str, topic: str, n: int, per_message: float
                  ) -> dict[str, Any] | None:
    try:
        from confluent_kafka import Consumer
    except ImportError:
        return None
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"bench-ck-{uuid.uuid4().hex}",
        "auto.offset.reset": "earliest", "enable.auto.commit": False,
    })
    consumer.subscribe([topic])
    got, first, cpu = 0, None, 0.0
    while got < n:
        messages = consumer.consume(num_messages=10_000, timeout=1.0)
        if messages and first is None:
            first, cpu = time.perf_counter(), time.process_time()
        got += sum(1 for m in messages if m.error() is None)
    elapsed = time.perf_counter() - (first or time.perf_counter())
    cpu = time.process_time() - cpu
    consumer.close()
    return {**_rates(got, elapsed, per_message), "cpu_us_per_message": round(cpu / got * 1e6, 1)}


def fleetlog_ingest(bootstrap: str, prefix: str, db: Path, batch_events: int,
                    profile: Path | None, *extra: str) -> dict[str, Any]:
    """One ingester in its own folder and group, so it reads the topic from the start."""
    command = [sys.executable]
    if profile is not None:
        command += ["-m", "cProfile", "-o", str(profile)]
    command += ["-m", "fleetlog", "ingest", "--bootstrap", bootstrap, "--topic-prefix", prefix,
                "--topics", "gpu", "--db", str(db), "--until-idle", "2", "--batch-events",
                str(batch_events), "--group", f"bench-{uuid.uuid4().hex[:8]}", "--json", *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                            check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    stats: dict[str, Any] = json.loads(result.stdout)
    stats.pop("lag", None)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    stats["cpu_s_both_processes"] = round(cpu, 2)  # startup and the final checkpoint included
    stats["cpu_us_per_event"] = round(cpu / max(stats["events"], 1) * 1e6, 1)
    return stats


def worker_stages(values: list[bytes], db: Path, batch: int, samples: int) -> dict[str, float]:
    """CPU µs per event of each step of the writer, run here in one thread; the file's
    bytes per GPU sample."""
    from fleetlog.ingest.store import tables
    from fleetlog.ingest.store.writer import StoreWriter, open_writer

    cpu = time.process_time
    spent = {"decode": 0.0, "dedup": 0.0, "arrow_tables": 0.0, "duckdb_insert": 0.0,
             "transaction_rest": 0.0}
    new_events, append = StoreWriter._new_events, StoreWriter._append
    event_tables = tables.event_tables

    def timed(name: str, fn: Any) -> Any:
        def wrapper(*args: Any) -> Any:
            started = cpu()
            try:
                return fn(*args)
            finally:
                spent[name] += cpu() - started
        return wrapper

    StoreWriter._new_events = timed("dedup", new_events)  # type: ignore[method-assign]
    StoreWriter._append = timed("duckdb_insert", append)  # type: ignore[method-assign]
    tables.event_tables = timed("arrow_tables", event_tables)
    try:
        writer = open_writer(db)
        relaxed = fewer_gc_passes()  # as while ingesting
        relaxed.__enter__()
        for start in range(0, len(values), batch):
            started = cpu()
            events = [c.decode(v) for v in values[start:start + batch]]
            spent["decode"] += cpu() - started
            started = cpu()
            writer.write_batch(events, offsets={("bench", 0): start + batch})  # type: ignore[arg-type]
            spent["transaction_rest"] += cpu() - started
        started = cpu()
        writer.close()  # DuckDB checkpoints on close
        spent["checkpoint_on_close"] = cpu() - started
    finally:
        relaxed.__exit__(None, None, None)
        StoreWriter._new_events, StoreWriter._append = new_events, append  # type: ignore[method-assign]
        tables.event_tables = event_tables
    inner = spent["dedup"] + spent["arrow_tables"] + spent["duckdb_insert"]
    spent["transaction_rest"] -= inner
    out = {k: round(v / len(values) * 1e6, 1) for k, v in spent.items()}
    out["total"] = round(sum(out.values()), 1)
    out["bytes_per_gpu_sample"] = round(db.stat().st_size / samples, 1)
    return out


def top_functions(profile: Path, limit: int = 25) -> list[str]:
    stats = pstats.Stats(str(profile))
    rows = []
    total = stats.total_tt  # type: ignore[attr-defined]
    entries = stats.stats  # type: ignore[attr-defined]
    for (file, line, name), (_cc, _nc, tt, ct, _callers) in sorted(
        entries.items(), key=lambda kv: -kv[1][2]
    )[:limit]:
        where = f"{Path(file).name}:{line}({name})" if line else name
        rows.append(f"{tt:7.2f}s self {100 * tt / total:5.1f}%  {ct:7.2f}s cum  {where}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default=os.environ.get("FLEETLOG_KAFKA_BOOTSTRAP",
                                                              "127.0.0.1:9092"))
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--batch-events", type=int, default=DEFAULT_BATCH_EVENTS)
    parser.add_argument("--source", choices=("generator", "synthetic"), default="generator",
                        help="whose gpu.sampled messages to use")
    parser.add_argument("--profile", action="store_true", help="also run ingest under cProfile")
    parser.add_argument("--group-of", type=int, default=0, metavar="N",
                        help="also run N ingesters in one consumer group on the topic "
                        "(use --partitions 8)")
    parser.add_argument("--ingest-arg", action="append", default=[], metavar="ARG",
                        help="pass ARG to every fleetlog ingest run (repeatable), e.g. "
                        "--ingest-arg=--memory-limit=128MB")
    parser.add_argument("--stages", action="store_true",
                        help="also time the writer's steps at 4,096 events and the default")
    args = parser.parse_args()

    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    topic = c.topic_name("gpu", prefix)
    values = (generator_scrapes if args.source == "generator" else rack_scrapes)(args.events)
    samples = sum(e.payload.rows for e in map(c.decode, values)
                  if isinstance(e, c.Envelope) and isinstance(e.payload, c.GpuSampled))
    per_message = samples / len(values)
    report: dict[str, Any] = {
        "events": args.events, "gpu_samples": samples,
        "message_bytes": int(np.mean([len(v) for v in values])), "topic": topic,
        "partitions": args.partitions, "cpus": os.cpu_count(), "source": args.source,
        "batch_events": args.batch_events, "load_average_at_start": os.getloadavg(),
        "ingest_args": args.ingest_arg,
    }
    if args.stages:
        with tempfile.TemporaryDirectory() as tmp:
            report["writer_stages_cpu_us_per_event"] = {
                str(batch): worker_stages(values, Path(tmp) / f"stages{batch}.duckdb", batch,
                                           samples)
                for batch in sorted({4096, args.batch_events})
            }
    try:
        measure(args, report, prefix, topic, values, per_message, samples)
    finally:
        from stages import delete_topics  # bench/ is this script's folder
        delete_topics(args.bootstrap, [topic])  # 245,760 messages are ~0.7 GB on the broker
    print(json.dumps(report, indent=2))


def measure(args: argparse.Namespace, report: dict[str, Any], prefix: str, topic: str,
            values: list[bytes], per_message: float, samples: int) -> None:
    """Produce the topic, then every reader of it in turn; the figures go into ``report``."""
    report["produce_s"] = round(produce(args.bootstrap, topic, values, args.partitions), 2)
    report["kafka_python_raw"] = raw_kafka_python(args.bootstrap, topic, args.events,
                                                  per_message)
    report["confluent_kafka_raw"] = raw_confluent(args.bootstrap, topic, args.events,
                                                 per_message)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "a").mkdir()
        (Path(tmp) / "b").mkdir()
        ingest = fleetlog_ingest(args.bootstrap, prefix, Path(tmp) / "a" / "bench.duckdb",
                                 args.batch_events, None, *args.ingest_arg)
        report["fleetlog_ingest"] = ingest
        report["db_mb"] = round((Path(tmp) / "a" / "bench.duckdb").stat().st_size / 1e6, 1)
        (Path(tmp) / "c").mkdir()
        report["fleetlog_ingest_writer_process"] = fleetlog_ingest(
            args.bootstrap, prefix, Path(tmp) / "c" / "bench.duckdb", args.batch_events, None,
            "--writer-process", *args.ingest_arg)
        if args.group_of:
            from stages import group_backlog  # bench/ is this script's folder
            report["fleetlog_ingest_group"] = group_backlog(
                args.bootstrap, prefix, Path(tmp) / "g", args.group_of, samples,
                "--batch-events", str(args.batch_events), *args.ingest_arg)
        if args.profile:
            profile = Path(tmp) / "ingest.prof"
            profiled = fleetlog_ingest(args.bootstrap, prefix, Path(tmp) / "b" / "profiled.duckdb",
                                       args.batch_events, profile, *args.ingest_arg)
            report["profiled_ingest_events_per_s"] = profiled["events_per_s"]
            report["profile_consumer_process_top"] = top_functions(profile)
    raw = report["kafka_python_raw"]["messages_per_s"]
    report["ratio_vs_kafka_python_raw"] = round(ingest["events_per_s"] / raw, 3)
    if report["confluent_kafka_raw"]:
        report["ratio_vs_confluent_raw"] = round(
            ingest["events_per_s"] / report["confluent_kafka_raw"]["messages_per_s"], 3)


if __name__ == "__main__":
    main()
