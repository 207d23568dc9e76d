"""The store writer's memory over many small commits, without Kafka: what a follower does all day.

    # 20,000 batches of 100 events (a follower's ~3 hours at two commits a second)
    .venv/bin/python bench/writer_memory.py --batches 20000

    # the same without shedding (StoreWriter.shed_cache never runs): DuckDB caches up to its limit
    .venv/bin/python bench/writer_memory.py --batches 20000 --no-shed

    # shedding as the writer did before it drained the eviction queues (a 16MB target)
    .venv/bin/python bench/writer_memory.py --batches 20000 --shed-target 16MB

Events come from the generator once (64 nodes, 2 simulated hours) and are written again and again
with new ids and later times, so every batch is new to the dedup look-up. After every ``--every``
batches the writer sheds as it does once a minute when following (unless ``--no-shed``) and the
process's RSS and glibc's bytes in use are sampled. Prints one line per sample and, with
``--json``, the samples and the growth per thousand batches over the second half of the run.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

from fleetlog.generators.config import SimConfig
from fleetlog.generators.run import simulate
from fleetlog.generators.sinks import MemorySink
from fleetlog.ingest.pipeline import malloc_in_use_bytes
from fleetlog.ingest.store.database import open_store_waiting, valid_memory_limit
from fleetlog.ingest.store.writer import SHED_TARGET, StoreWriter


def _malloc_in_use_mb() -> float | None:
    in_use = malloc_in_use_bytes()
    return None if in_use is None else in_use / 2**20


def _rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20


def _growth_per_k(samples: list[dict[str, Any]], key: str) -> float | None:
    """Least-squares slope of ``key`` against batches over the second half, MB per 1,000."""
    half = [s for s in samples[len(samples) // 2:] if s.get(key) is not None]
    if len(half) < 3:
        return None
    xs, ys = [s["batches"] / 1000 for s in half], [s[key] for s in half]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return round(sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx, 3) \
        if sxx else None


def run(batches: int, per_batch: int, every: int, shed: bool, folder: Path,
        target: str = SHED_TARGET) -> dict[str, Any]:
    sink = MemorySink()
    simulate(SimConfig(nodes=64, hours=2, seed=1), sink)
    events = sink.events
    span = max(e.time_us for e in events) - min(e.time_us for e in events) + 1
    writer = StoreWriter(open_store_waiting(folder / "writer.duckdb", memory_limit="512MB"),
                         shed_every_s=float("inf"), shed_target=target)
    samples: list[dict[str, Any]] = []
    started = time.perf_counter()
    done = 0
    try:
        while done < batches:
            lap, start = divmod(done * per_batch, len(events))
            chunk = [msgspec.structs.replace(e, id=f"{e.id}.{lap}", time_us=e.time_us + lap * span)
                     for e in events[start:start + per_batch]]
            writer.write_batch(chunk, (), {("bench", 0): done + 1})
            done += 1
            if done % every == 0 or done == batches:
                if shed:
                    writer.shed_cache()
                gc.collect()
                sample: dict[str, Any] = {"batches": done, "events": done * per_batch,
                          "seconds": round(time.perf_counter() - started, 1),
                          "rss_mb": round(_rss_mb(), 1)}
                in_use = _malloc_in_use_mb()
                sample["malloc_in_use_mb"] = None if in_use is None else round(in_use, 1)
                samples.append(sample)
                print(f"{done:>8,} batches {sample['seconds']:>7.1f} s  RSS "
                      f"{sample['rss_mb']:>6.1f} MB  malloc in use {sample['malloc_in_use_mb']} MB",
                      file=sys.stderr, flush=True)
    finally:
        writer.close()
    return {"batches": batches, "events_per_batch": per_batch, "shed": shed,
            "shed_target": target if shed else None,
            "samples": samples,
            "rss_mb_per_1000_batches": _growth_per_k(samples, "rss_mb"),
            "malloc_mb_per_1000_batches": _growth_per_k(samples, "malloc_in_use_mb")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=20_000)
    parser.add_argument("--events-per-batch", type=int, default=100)
    parser.add_argument("--every", type=int, default=1_000, help="batches between samples")
    parser.add_argument("--no-shed", action="store_true",
                        help="never shed (DuckDB caches written blocks up to its limit)")
    parser.add_argument("--shed-target", metavar="SIZE", default=SHED_TARGET,
                        help=f"the limit the writer sheds to (default {SHED_TARGET}; the writer "
                             "used 16MB before it drained the eviction queues)")
    parser.add_argument("--json", action="store_true", help="print the samples and slopes as JSON")
    args = parser.parse_args()
    if args.batches < 1 or args.events_per_batch < 1 or args.every < 1:
        parser.error("--batches, --events-per-batch and --every must be at least 1")
    if not valid_memory_limit(args.shed_target):
        parser.error(f"--shed-target {args.shed_target!r} is not a size like 256KiB or 16MB")
    with tempfile.TemporaryDirectory(prefix="fleetlog-writer-memory-") as folder:
        result = run(args.batches, args.events_per_batch, args.every, not args.no_shed,
                     Path(folder), args.shed_target)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"growth over the second half, per 1,000 batches: RSS "
              f"{result['rss_mb_per_1000_batches']} MB, malloc in use "
              f"{result['malloc_mb_per_1000_batches']} MB")


if __name__ == "__main__":
    main()
