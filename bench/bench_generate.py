"""Benchmark of the synthetic source (not a test): generation and produce rates, long-run memory.

Each measurement runs in its own process (so peak memory is its own) and prints one JSON line;
the parent prints a table. Rates are GPU-samples (rows of ``gpu.sampled``) per second of wall time
and per second of CPU time (the machine may be shared; CPU time is what one core did).

    .venv/bin/python bench/bench_generate.py                      # everything
    .venv/bin/python bench/bench_generate.py --only null duckdb   # some of it
    FLEETLOG_KAFKA_BOOTSTRAP=127.0.0.1:29092 .venv/bin/python bench/bench_generate.py --only kafka
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fleetlog.generators.config import SimConfig  # noqa: E402
from fleetlog.generators.run import simulate  # noqa: E402
from fleetlog.generators.sinks import KafkaSink, Sink  # noqa: E402
from fleetlog.ingest.pipeline import peak_rss_mb  # noqa: E402


def measure(mode: str, nodes: int, hours: float, bootstrap: str) -> dict[str, Any]:
    config = SimConfig(nodes=nodes, hours=hours, seed=1, scenario="llama3", fault_rate=1.0)
    target: str | Sink
    prefix = None
    with tempfile.TemporaryDirectory(prefix="fleetlog-bench-") as tmp:
        if mode in ("null", "long"):
            target = "null:"
        elif mode == "duckdb":
            target = f"duckdb:{tmp}/bench.duckdb"
        elif mode.startswith("kafka-"):
            from fleetlog.ingest.kafka.producer import KAFKA_PYTHON_DEFAULTS, TUNED

            prefix = f"bench-{uuid.uuid4().hex[:8]}"
            tuning = {
                "kafka-tuned": TUNED,
                "kafka-tuned-gzip": {**TUNED, "compression_type": "gzip"},
                "kafka-defaults": KAFKA_PYTHON_DEFAULTS,
            }[mode]
            target = KafkaSink(bootstrap, topic_prefix=prefix, tuning=dict(tuning))
        else:
            raise SystemExit(f"unknown mode {mode}")
        cpu = time.process_time()
        wall = time.perf_counter()
        summary = simulate(config, target)
        wall = time.perf_counter() - wall
        cpu = time.process_time() - cpu
        db_mb = None
        if mode == "duckdb":
            db_mb = round(Path(f"{tmp}/bench.duckdb").stat().st_size / 2**20, 1)
    if prefix is not None:
        _drop_topics(bootstrap, prefix)
    result = {
        "mode": mode, "nodes": nodes, "sim_hours": hours, "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2), "events": summary["events"],
        "gpu_samples": summary["gpu_samples"],
        "gpu_samples_per_s_wall": round(summary["gpu_samples"] / wall),
        "gpu_samples_per_s_cpu": round(summary["gpu_samples"] / cpu),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "faults": summary["faults"],
    }
    if db_mb is not None:
        result["db_mb"] = db_mb
    if "messages" in summary:
        result["messages_per_s"] = round(summary["messages"] / wall)
        result["mb_per_s"] = round(summary["bytes"] / wall / 2**20, 1)
    return result


def _drop_topics(bootstrap: str, prefix: str) -> None:
    try:
        from kafka.admin import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","))
        admin.delete_topics([t for t in admin.list_topics() if t.startswith(prefix + ".")])
        admin.close()
    except Exception as exc:  # cleanup only: never fail the benchmark for it
        print(f"note: could not delete topics {prefix}.*: {exc}", file=sys.stderr)


PLAN = {  # mode -> simulated hours (2,048 nodes)
    "null": 1.0, "duckdb": 0.25, "kafka-tuned": 0.25, "kafka-tuned-gzip": 0.25,
    "kafka-defaults": 0.25, "long": 24.0,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=2048)
    parser.add_argument("--only", nargs="*", choices=[*PLAN, "kafka"], default=None)
    parser.add_argument("--bootstrap",
                        default=os.environ.get("FLEETLOG_KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--hours", type=float, default=None, help="override simulated hours")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.nodes, args.hours, args.bootstrap)))
        return
    modes = list(PLAN) if not args.only else [
        m for m in PLAN if m in args.only or (m.startswith("kafka") and "kafka" in args.only)]
    rows = []
    for mode in modes:
        hours = args.hours if args.hours is not None else PLAN[mode]
        out = subprocess.run(
            [sys.executable, __file__, "--one", mode, "--nodes", str(args.nodes), "--hours",
             str(hours), "--bootstrap", args.bootstrap],
            capture_output=True, text=True, check=False,
        )
        if out.returncode != 0:
            print(f"{mode}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
            continue
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(json.dumps(row), flush=True)
    print()
    print("| mode | sim h | wall s | cpu s | GPU-samples/s (wall) | GPU-samples/s (cpu) | "
          "msgs/s | MB/s | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['sim_hours']} | {r['wall_s']} | {r['cpu_s']} | "
              f"{r['gpu_samples_per_s_wall']:,} | {r['gpu_samples_per_s_cpu']:,} | "
              f"{r.get('messages_per_s', '')} | {r.get('mb_per_s', '')} | {r['peak_rss_mb']} |")


if __name__ == "__main__":
    main()
