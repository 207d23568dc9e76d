"""Where simulated events go: Kafka, a DuckDB store, JSON-lines files, memory, or nowhere.

Every sink is the kernel's one ``Sink`` (``fleetlog.ingest.contract.sink``): ``write(events)`` (a
chunk, in stream order; the simulator has no dead letters), ``close()`` (flush, release), and
``describe()`` for the run summary. Kafka and the store are the kernel's own sinks, shared with
the readers, replay and analysis rather than copied here: ``KafkaSink`` (the tuned
``Publisher``, keys as in docs/design.md#topics-and-keys) and ``StoreSink`` (``StoreWriter``:
one transaction per ~500k rows, dedup by event id), which is the embedded mode with no broker.
What only the simulator writes to lives here: JSON-lines files, memory, nowhere, and the
``--to`` URI.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, Final

from fleetlog.generators.config import SimulationError
from fleetlog.ingest import contract as c
from fleetlog.ingest.contract import DeadLetter, SinkTotals
from fleetlog.ingest.contract import Sink as Sink  # re-exported: what `simulate` takes
from fleetlog.ingest.kafka.sink import KafkaSink as KafkaSink  # re-exported: one Kafka sink
from fleetlog.ingest.store.sink import StoreSink

SCHEMES: Final = ("kafka", "duckdb", "jsonl", "null")
DUCKDB_BATCH_ROWS: Final = 500_000  # sample rows per store transaction


class NullSink:
    """Discards events (benchmarks): counts them only."""

    def __init__(self) -> None:
        self.target = "null:"
        self.totals = SinkTotals()

    def write(self, events: Sequence[c.Envelope], dead: Sequence[DeadLetter] = ()) -> None:
        self.totals.events += len(events)
        self.totals.dead_letters += len(dead)

    def close(self) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {"to": self.target}


class MemorySink:
    """Keeps every event (tests, notebooks) in ``events``, and dead letters in ``dead``."""

    def __init__(self) -> None:
        self.target = "memory"
        self.totals = SinkTotals()
        self.events: list[c.Envelope] = []
        self.dead: list[DeadLetter] = []

    def write(self, events: Sequence[c.Envelope], dead: Sequence[DeadLetter] = ()) -> None:
        self.events.extend(events)
        self.dead.extend(dead)
        self.totals.events += len(events)
        self.totals.dead_letters += len(dead)

    def close(self) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {"to": self.target}


class JsonlSink:
    """One file per topic family in ``folder`` (``gpu.jsonl``, ``jobs.jsonl``…), appended to;
    each line is ``contract.encode_json(event)``. The files hold events only: a dead letter has
    no place in them, so one given is refused (the simulator makes none).

    The names are predictable, so a symbolic link planted at one is refused rather than
    followed (``O_NOFOLLOW``), and so is anything there that is not a regular file (a FIFO)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.target = f"jsonl:{self.folder}"
        self.totals = SinkTotals()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SimulationError(f"cannot create {self.folder}: {exc.strerror}") from exc
        self._files: dict[str, IO[bytes]] = {}

    def write(self, events: Sequence[c.Envelope], dead: Sequence[DeadLetter] = ()) -> None:
        if dead:
            raise ValueError(f"{self.target} holds events only: {len(dead)} dead letters given")
        for event in events:
            family = event.topic_family
            out = self._files.get(family)
            if out is None:
                out = self._files[family] = _append_only(self.folder / f"{family}.jsonl")
            out.write(c.encode_json(event) + b"\n")
        self.totals.events += len(events)

    def close(self) -> None:
        for out in self._files.values():
            out.close()
        self._files = {}

    def describe(self) -> dict[str, Any]:
        return {"to": self.target, "files": sorted(f"{k}.jsonl" for k in
                                                   self._files) or None}


def _append_only(path: Path) -> IO[bytes]:
    """``path`` opened to append, if it is a regular file or missing; never through a link."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise SimulationError(f"{path} is a symbolic link: remove it (jsonl: files are "
                                  "appended to only as regular files)") from exc
        if exc.errno == errno.ENXIO:  # a FIFO nobody reads (O_NONBLOCK: never waits for one)
            raise SimulationError(f"{path} is not a regular file: remove it, or write "
                                  "elsewhere") from exc
        raise SimulationError(f"cannot write {path}: {exc.strerror}") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise SimulationError(f"{path} is not a regular file: remove it, or write elsewhere")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "ab", buffering=1 << 20)


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
        return StoreSink.open(Path(where), batch_rows=DUCKDB_BATCH_ROWS)
    if scheme == "kafka":
        return KafkaSink(where, topic_prefix=topic_prefix)
    raise SimulationError(f"unknown target scheme {scheme!r}: use one of {', '.join(SCHEMES)}")
