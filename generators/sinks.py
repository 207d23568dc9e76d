"""Where simulated events go: Kafka, JSON-lines files, a DuckDB store, memory, or nowhere.

Every sink has ``write(events)`` (a chunk, in stream order) and ``close()`` (flush, release), and
``describe()`` for the run summary. Kafka goes through the shared ``ingest.publish.Publisher``
(tuned producer, keys as in DESIGN.md section 5); DuckDB through ``ingest.writer.StoreWriter`` (one
transaction per batch, dedup by event id), which is the embedded mode with no broker.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any, Final, Protocol

from fleetlog.generators.config import SimulationError
from fleetlog.ingest import contract as c

SCHEMES: Final = ("kafka", "duckdb", "jsonl", "null")
DUCKDB_BATCH_ROWS: Final = 500_000  # sample rows per store transaction


class Sink(Protocol):
    def write(self, events: list[c.Envelope]) -> None: ...

    def close(self) -> None: ...

    def describe(self) -> dict[str, Any]: ...


class NullSink:
    """Discards events (benchmarks): counts them only."""

    def __init__(self) -> None:
        self.events = 0

    def write(self, events: list[c.Envelope]) -> None:
        self.events += len(events)

    def close(self) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {"to": "null:"}


class MemorySink:
    """Keeps every event (tests, notebooks)."""

    def __init__(self) -> None:
        self.events: list[c.Envelope] = []

    def write(self, events: list[c.Envelope]) -> None:
        self.events.extend(events)

    def close(self) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {"to": "memory"}


class JsonlSink:
    """One file per topic family in ``folder`` (``gpu.jsonl``, ``jobs.jsonl``…), appended to;
    each line is ``contract.encode_json(event)``."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SimulationError(f"cannot create {self.folder}: {exc.strerror}") from exc
        self._files: dict[str, IO[bytes]] = {}
        self.lines = 0

    def write(self, events: list[c.Envelope]) -> None:
        for event in events:
            family = event.topic_family
            out = self._files.get(family)
            if out is None:
                path = self.folder / f"{family}.jsonl"
                try:
                    out = self._files[family] = path.open("ab", buffering=1 << 20)
                except OSError as exc:
                    raise SimulationError(f"cannot write {path}: {exc.strerror}") from exc
            out.write(c.encode_json(event) + b"\n")
        self.lines += len(events)

    def close(self) -> None:
        for out in self._files.values():
            out.close()
        self._files = {}

    def describe(self) -> dict[str, Any]:
        return {"to": f"jsonl:{self.folder}", "files": sorted(f"{k}.jsonl" for k in
                                                              self._files) or None}


class DuckDBSink:
    """Lands events in a store file through the shared writer, in transactions of ~500k rows."""

    def __init__(self, path: str | Path) -> None:
        from fleetlog.ingest.store.writer import open_writer

        self.path = Path(path)
        self.writer = open_writer(self.path)
        self._buffer: list[c.Envelope] = []
        self._rows = 0
        self.landed = 0
        self.duplicates = 0

    def write(self, events: list[c.Envelope]) -> None:
        self._buffer.extend(events)
        for event in events:
            if isinstance(event.payload, c.GpuSampled | c.PortSampled):
                self._rows += event.payload.rows
        self._rows += len(events)
        if self._rows >= DUCKDB_BATCH_ROWS:
            self.flush()

    def flush(self) -> None:
        if self._buffer:
            result = self.writer.write_batch(self._buffer)
            self.landed += result.events
            self.duplicates += result.duplicates
        self._buffer, self._rows = [], 0

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.writer.close()

    def describe(self) -> dict[str, Any]:
        return {"to": f"duckdb:{self.path}", "landed": self.landed,
                "duplicates": self.duplicates}


class KafkaSink:
    """Publishes each event to ``<prefix>.<family>`` keyed by ``event.key``."""

    def __init__(self, bootstrap: str, *, topic_prefix: str | None = None,
                 tuning: dict[str, Any] | None = None) -> None:
        from fleetlog.ingest.kafka.producer import Publisher
        from fleetlog.ingest.kafka.settings import settings_for

        self.settings = settings_for(bootstrap, topic_prefix=topic_prefix)
        self.publisher = Publisher(self.settings, tuning=tuning, topic_prefix=topic_prefix)

    def write(self, events: list[c.Envelope]) -> None:
        send = self.publisher.send
        for event in events:
            send(event)

    def close(self) -> None:
        self.publisher.close()

    def describe(self) -> dict[str, Any]:
        stats = self.publisher.stats
        return {"to": f"kafka://{self.settings.bootstrap}", "topic_prefix": self.publisher.prefix,
                "messages": stats.messages, "bytes": stats.bytes}


def parse_target(uri: str) -> tuple[str, str]:
    """``kafka://HOST:PORT`` / ``duckdb:PATH`` / ``jsonl:DIR`` / ``null:`` -> (scheme, rest)."""
    scheme, sep, rest = uri.partition(":")
    rest = rest.removeprefix("//")
    if not sep or scheme not in SCHEMES or (scheme != "null" and not rest):
        raise SimulationError(
            f"{uri!r} is not a target: use kafka://HOST:PORT, duckdb:PATH, jsonl:DIR or null:"
        )
    return scheme, rest


def open_sink(target: str | tuple[str, str], *, topic_prefix: str | None = None) -> Sink:
    scheme, where = parse_target(target) if isinstance(target, str) else target
    if scheme == "null":
        return NullSink()
    if scheme == "jsonl":
        return JsonlSink(where)
    if scheme == "duckdb":
        return DuckDBSink(where)
    if scheme == "kafka":
        return KafkaSink(where, topic_prefix=topic_prefix)
    raise SimulationError(f"unknown target scheme {scheme!r}: use one of {', '.join(SCHEMES)}")
