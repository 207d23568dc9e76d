"""Where read events go: straight into a DuckDB store, or published to Kafka.

Both are the kernel's sinks (``contract.Sink``), the same ones the simulator, replay and analysis
use; readers keep no copy of their own. ``StoreSink`` lands each input's events with its dead
letters in one transaction (``StoreWriter``); event ids are content hashes, so a second import of
the same input lands nothing new. ``KafkaSink`` publishes each event to its topic and each dead
letter to ``<prefix>.dlq`` (keeping where it came from and why), and waits for delivery after
every write: an import or a scrape is delivered before the command goes on.
"""

from __future__ import annotations

from pathlib import Path

from fleetlog.ingest.contract import Sink
from fleetlog.ingest.kafka.sink import KafkaSink
from fleetlog.ingest.readers.errors import ReaderError
from fleetlog.ingest.store.sink import StoreSink


def open_sink(
    *, db: str | Path | None = None, to: tuple[str, str] | None = None,
    topic_prefix: str | None = None,
) -> Sink:
    """``db`` -> StoreSink; ``("kafka", "host:port")`` or ``("duckdb", path)`` -> that sink."""
    if db is not None and to is not None:
        raise ReaderError("give --db (land directly) or --to kafka://HOST:PORT (publish), "
                          "not both")
    if to is not None:
        scheme, where = to
        if scheme == "kafka":
            return KafkaSink(where, topic_prefix=topic_prefix, deliver_each_write=True)
        if scheme == "duckdb":
            return StoreSink.open(where)
        raise ReaderError(f"cannot write to {scheme}: use kafka://HOST:PORT or duckdb:PATH")
    if db is None:
        raise ReaderError("say where the events go: --db PATH or --to kafka://HOST:PORT")
    return StoreSink.open(db)
