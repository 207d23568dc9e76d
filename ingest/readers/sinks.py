"""Where read events go: straight into a DuckDB store, or published to Kafka.

``StoreSink`` lands each batch with its dead letters in one transaction (``StoreWriter``); event
ids are content hashes, so a second import of the same input lands nothing new.

``KafkaSink`` publishes each event to its topic (``Publisher``). A dead letter is published to
``<prefix>.dlq`` as a JSON object ``{"origin", "offset", "stage", "error", "raw_b64"}`` keyed by
``file:<origin>``, so it keeps where it came from and why.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from fleetlog.ingest import contract as c
from fleetlog.ingest.contract import DeadLetter


@dataclass
class SinkTotals:
    events: int = 0  # landed (new) or published
    duplicates: int = 0  # already in the store
    dead_letters: int = 0
    rows: dict[str, int] = field(default_factory=dict)


class Sink(Protocol):
    target: str
    totals: SinkTotals

    def write(self, events: Sequence[c.Envelope], dead: Sequence[DeadLetter]) -> None: ...

    def close(self) -> None: ...


class StoreSink:
    def __init__(self, path: str | Path) -> None:
        from fleetlog.ingest.store.writer import open_writer

        self.target = f"duckdb:{path}"
        self.totals = SinkTotals()
        self._writer = open_writer(path)

    def write(self, events: Sequence[c.Envelope], dead: Sequence[DeadLetter]) -> None:
        result = self._writer.write_batch(events, dead)
        self.totals.events += result.events
        self.totals.duplicates += result.duplicates
        self.totals.dead_letters += result.dead_letters
        for table, count in result.rows.items():
            self.totals.rows[table] = self.totals.rows.get(table, 0) + count

    def close(self) -> None:
        self._writer.close()


class KafkaSink:
    def __init__(self, bootstrap: str, *, topic_prefix: str | None = None) -> None:
        from fleetlog.ingest.kafka.producer import Publisher
        from fleetlog.ingest.kafka.settings import settings_for

        settings = settings_for(bootstrap, topic_prefix=topic_prefix)
        self.target = f"kafka://{settings.bootstrap}"
        self.totals = SinkTotals()
        self._publisher = Publisher(settings)
        self._dlq = c.topic_name("dlq", self._publisher.prefix)

    def write(self, events: Sequence[c.Envelope], dead: Sequence[DeadLetter]) -> None:
        for event in events:
            self._publisher.send(event)
        for letter in dead:
            value = json.dumps({
                "origin": letter.origin, "offset": letter.offset, "stage": letter.stage,
                "error": letter.error,
                "raw_b64": base64.b64encode(letter.raw).decode() if letter.raw else None,
            }).encode()
            self._publisher.send_raw(self._dlq, f"file:{letter.origin}".encode(), value)
        self._publisher.flush()
        self.totals.events += len(events)
        self.totals.dead_letters += len(dead)

    def close(self) -> None:
        self._publisher.close()


def open_sink(
    *, db: str | Path | None = None, to: tuple[str, str] | None = None,
    topic_prefix: str | None = None,
) -> Sink:
    """``db`` -> StoreSink; ``("kafka", "host:port")`` or ``("duckdb", path)`` -> that sink."""
    from fleetlog.ingest.readers.errors import ReaderError

    if db is not None and to is not None:
        raise ReaderError("give --db (land directly) or --to kafka://HOST:PORT (publish), "
                          "not both")
    if to is not None:
        scheme, where = to
        if scheme == "kafka":
            return KafkaSink(where, topic_prefix=topic_prefix)
        if scheme == "duckdb":
            return StoreSink(where)
        raise ReaderError(f"cannot write to {scheme}: use kafka://HOST:PORT or duckdb:PATH")
    if db is None:
        raise ReaderError("say where the events go: --db PATH or --to kafka://HOST:PORT")
    return StoreSink(db)
