"""The same ``gpu.sampled`` topic landed in DuckDB the way a user would write it by hand.

Two baselines for ``fleetlog ingest``, each run as its own process (so peak memory is its own)
and printing one JSON line:

- ``confluent``: a plain confluent-kafka consumer. Decode each message with ``ingest.contract``,
  turn each scrape into its ``gpu_samples`` rows (numpy views of the column bytes), insert a
  batch at a time through Arrow, then commit the offsets (at least once: no dedup, no event log,
  no offsets in the store's transaction: less than fleetlog does).
- ``quix``: a quixstreams ``Application`` reading the topic, the contract as its value
  deserializer, and a ``BatchingSink`` that writes each checkpoint's batch to DuckDB the same way
  (quix commits the offsets after the sink has written).

Both write into a store made by ``ingest.store.open_store`` (the table ``gpu_samples_raw``, the
rows ``fleetlog ingest`` lands for the same messages). The rate is GPU-samples per second from
the first record received to the last commit, like ``fleetlog ingest``'s ``active_s``.

    .venv/bin/python bench/landing.py confluent --bootstrap 127.0.0.1:49092 \\
        --topic bench.gpu --db /tmp/c.duckdb --messages 46080
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fleetlog.ingest import contract as c  # noqa: E402
from fleetlog.ingest.pipeline import DEFAULT_BATCH_EVENTS, peak_rss_mb  # noqa: E402
from fleetlog.ingest.store import open_store  # noqa: E402

BATCH_MESSAGES = DEFAULT_BATCH_EVENTS  # the same batch as fleetlog ingest's default --batch-events
SIGNALS = [(s.column, np.dtype(s.dtype)) for s in c.GPU_SIGNALS]
TS = pa.timestamp("us", tz="UTC")


def gpu_rows(events: Iterable[c.Envelope]) -> pa.Table | None:
    """The gpu_samples rows of a batch of decoded events, as one Arrow table (NaN -> NULL)."""
    ids: list[np.ndarray[Any, Any]] = []
    ts: list[np.ndarray[Any, Any]] = []
    nodes: list[np.ndarray[Any, Any]] = []
    gpus: list[np.ndarray[Any, Any]] = []
    cols: dict[str, list[np.ndarray[Any, Any]]] = {name: [] for name, _ in SIGNALS}
    for event in events:
        p = event.payload
        if not isinstance(p, c.GpuSampled):
            continue
        n = p.rows
        ids.append(np.full(n, event.id, dtype=object))
        ts.append(np.full(n, event.time_us, dtype=np.int64))
        nodes.append(np.repeat(np.array(p.nodes, dtype=object), p.gpu_count))
        gpus.append(np.frombuffer(p.gpu, dtype=np.uint8))
        for name, dtype in SIGNALS:
            raw = p.columns.get(name)
            cols[name].append(np.frombuffer(raw, dtype=dtype) if raw is not None
                              else np.full(n, np.nan, dtype=dtype))
    if not ids:
        return None
    table = {
        "event_id": pa.array(np.concatenate(ids), pa.string()),
        "ts": pa.array(np.concatenate(ts), TS),
        "node": pa.array(np.concatenate(nodes), pa.string()),
        "gpu": pa.array(np.concatenate(gpus)),
    }
    for name, _ in SIGNALS:
        table[name] = pa.array(np.concatenate(cols[name]), from_pandas=True)
    return pa.table(table)


def insert(con: Any, table: pa.Table | None) -> int:
    if table is None:
        return 0
    con.register("_batch", table)
    try:
        con.execute("INSERT INTO gpu_samples_raw BY NAME SELECT * FROM _batch")
    finally:
        con.unregister("_batch")
    return int(table.num_rows)


def _result(name: str, messages: int, rows: int, first: float | None, last: float,
            cpu: float) -> dict[str, Any]:
    seconds = max(last - (first or last), 1e-9)
    return {
        "client": name, "messages": messages, "gpu_samples": rows,
        "active_s": round(seconds, 3), "gpu_samples_per_s": round(rows / seconds),
        "messages_per_s": round(messages / seconds), "cpu_s": round(cpu, 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def confluent(bootstrap: str, topic: str, db: Path, messages: int, idle_s: float) -> dict[str, Any]:
    from confluent_kafka import Consumer

    con = open_store(db)
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"bench-ck-{uuid.uuid4().hex[:8]}",
        "auto.offset.reset": "earliest", "enable.auto.commit": False,
    })
    consumer.subscribe([topic])
    got, rows, first, last_seen = 0, 0, None, time.monotonic()
    cpu0 = time.process_time()
    pending: list[c.Envelope] = []
    while got < messages and time.monotonic() - last_seen < idle_s:
        batch = consumer.consume(num_messages=1000, timeout=0.5)
        if not batch:
            continue
        last_seen = time.monotonic()
        if first is None:
            first, cpu0 = time.perf_counter(), time.process_time()
        for message in batch:
            if message.error() is not None:
                continue
            event = c.decode(message.value())
            got += 1
            if isinstance(event, c.Envelope):
                pending.append(event)
        if len(pending) >= BATCH_MESSAGES or got >= messages:
            con.begin()
            rows += insert(con, gpu_rows(pending))
            con.commit()
            consumer.commit(asynchronous=False)
            pending = []
    if pending:
        con.begin()
        rows += insert(con, gpu_rows(pending))
        con.commit()
        consumer.commit(asynchronous=False)
    last = time.perf_counter()
    cpu = time.process_time() - cpu0
    consumer.close()
    con.close()
    return _result("confluent-kafka", got, rows, first, last, cpu)


@dataclass
class _Progress:
    """What quix()'s sink has landed so far."""

    messages: int = 0
    rows: int = 0
    first: float | None = None
    last: float = 0.0


def quix(bootstrap: str, topic: str, db: Path, messages: int, idle_s: float) -> dict[str, Any]:
    from quixstreams import Application
    from quixstreams.models.serializers import Deserializer
    from quixstreams.sinks import BatchingSink, SinkBatch

    # Without quixstreams installed (the bench extra only) mypy sees its classes as Any.
    class ContractDeserializer(Deserializer):  # type: ignore[misc, unused-ignore]
        def __call__(self, value: bytes, ctx: Any) -> Any:
            return c.decode(value)

    con = open_store(db)
    state = _Progress()

    class DuckDBSink(BatchingSink):  # type: ignore[misc, unused-ignore]
        def add(self, *args: Any, **kwargs: Any) -> None:
            if state.first is None:
                state.first = time.perf_counter()
            super().add(*args, **kwargs)

        def write(self, batch: SinkBatch) -> None:
            events = [item.value for item in batch if isinstance(item.value, c.Envelope)]
            con.begin()
            state.rows += insert(con, gpu_rows(events))
            con.commit()
            state.messages += batch.size
            state.last = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="bench-quix-") as state_dir:
        app = Application(
            broker_address=bootstrap, consumer_group=f"bench-quix-{uuid.uuid4().hex[:8]}",
            auto_offset_reset="earliest", commit_every=BATCH_MESSAGES, state_dir=state_dir,
            loglevel="WARNING", auto_create_topics=False, use_changelog_topics=False,
        )
        # quixstreams' Deserializer.__init__ is unannotated. Without quixstreams installed (it
        # is in the bench extra only) mypy sees Any here, hence unused-ignore too.
        deserializer = ContractDeserializer()  # type: ignore[no-untyped-call, unused-ignore]
        sdf = app.dataframe(app.topic(topic, value_deserializer=deserializer))
        sdf.sink(DuckDBSink())
        cpu0 = time.process_time()
        app.run(count=messages, timeout=idle_s, collect=False)
        cpu = time.process_time() - cpu0
    last = time.perf_counter()
    con.close()
    return _result("quixstreams", state.messages, state.rows, state.first, last, cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("client", choices=["confluent", "quix"])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--messages", type=int, required=True,
                        help="stop once this many messages are landed")
    parser.add_argument("--idle", type=float, default=10.0, help="or once quiet this long (s)")
    args = parser.parse_args()
    run = confluent if args.client == "confluent" else quix
    print(json.dumps(run(args.bootstrap, args.topic, args.db, args.messages, args.idle)))


if __name__ == "__main__":
    main()
