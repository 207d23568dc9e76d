"""The broker's own ceiling on this machine: Kafka's producer and consumer perf tools.

    .venv/bin/python bench/kafka_ceiling.py --bootstrap 127.0.0.1:9092 --records 200000 \
        --record-size 3000 --json

Record size defaults to a realistic fleetlog message (one rack's scrape, 4 nodes x 8 GPUs x
14 signals, msgpack: ~3 KB). Prints records/s and MB/s for both directions.
"""

from __future__ import annotations

import argparse
import json
import re
import uuid

from fleetlog.ingest.kafka.broker import run_tool


def producer_ceiling(bootstrap: str, topic: str, records: int, size: int) -> dict[str, float]:
    out = run_tool(
        "org.apache.kafka.tools.ProducerPerformance", "--topic", topic,
        "--num-records", str(records), "--record-size", str(size), "--throughput", "-1",
        "--producer-props", f"bootstrap.servers={bootstrap}", "linger.ms=20",
        "batch.size=1048576",
    )
    final = [line for line in out.splitlines() if line.startswith(f"{records} records sent")]
    match = re.search(r"([\d.]+) records/sec \(([\d.]+) MB/sec\)", final[-1] if final else "")
    if not match:
        raise RuntimeError(f"unexpected ProducerPerformance output: {out[-500:]}")
    return {"records_per_s": float(match.group(1)), "mb_per_s": float(match.group(2))}


def consumer_ceiling(bootstrap: str, topic: str, records: int) -> dict[str, float]:
    out = run_tool(
        "org.apache.kafka.tools.ConsumerPerformance", "--bootstrap-server", bootstrap,
        "--topic", topic, "--num-records", str(records),
    )
    rows = [line for line in out.splitlines() if re.match(r"\d{4}-\d\d-\d\d", line)]
    if not rows:
        raise RuntimeError(f"unexpected ConsumerPerformance output: {out[-500:]}")
    fields = [f.strip() for f in rows[-1].split(",")]
    # start, end, MB, MB/s, msgs, msgs/s, rebalance ms, fetch ms, fetch MB/s, fetch msgs/s
    return {"records_per_s": float(fields[9]), "mb_per_s": float(fields[8])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--record-size", type=int, default=3000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    topic = f"bench-ceiling-{uuid.uuid4().hex[:8]}"
    result = {
        "record_size": args.record_size,
        "producer": producer_ceiling(args.bootstrap, topic, args.records, args.record_size),
        "consumer": consumer_ceiling(args.bootstrap, topic, args.records),
    }
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
