"""The one ``Sink``: where a stage puts the events it is done with.

Every stage that hands events on writes them to a ``Sink``: the simulator (``fleetlog simulate
--to``: Kafka, a store, JSON-lines files, memory, nowhere), the real-format readers (``fleetlog
import``, ``fleetlog scrape``), replay (``fleetlog replay --to``) and analysis (its incidents,
stored and published). Before, each had its own protocol or inline target doing the same thing
with other names; one protocol lets a stage take any of them, and the two that several stages
use exist once, in the kernel beside what they wrap:

- ``fleetlog.ingest.store.sink.StoreSink``: lands events in a store through ``StoreWriter``;
- ``fleetlog.ingest.kafka.sink.KafkaSink``: publishes them through ``Publisher``.

A sink has:
- ``write(events, dead)``: a chunk of events in stream order, with the dead letters read along
  with them (input that could not become an event; most sources have none). A sink may buffer;
- ``close()``: flush what is buffered and release what it holds (files, connections);
- ``target``: where the events go, as the user wrote it (``duckdb:PATH``, ``kafka://HOST:PORT``);
- ``totals``: what became of them so far (``SinkTotals``);
- ``describe()``: the sink's own summary for a run report (what ``fleetlog simulate`` prints).

What is NOT a sink: the ingester's writer (``ingest.pipeline.BatchWriter``: a writer thread or
process). It does not take events and forget them: it holds batches in flight whose Kafka offsets
commit in the same transaction as their rows, hands each result back to the consumer (which then
tells Kafka), and is waited on when partitions move. That is another contract, with its own name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from fleetlog.ingest.contract.dead_letter import DeadLetter
from fleetlog.ingest.contract.events import Envelope


@dataclass
class SinkTotals:
    """What a sink did with what it was given, so far."""

    events: int = 0  # landed (new to the store), published, or kept
    duplicates: int = 0  # already in the store (a store sink only)
    dead_letters: int = 0
    rows: dict[str, int] = field(default_factory=dict)  # rows per store table (a store sink)


class Sink(Protocol):
    """Where events go; see the module docstring."""

    @property
    def target(self) -> str: ...

    @property
    def totals(self) -> SinkTotals: ...

    def write(self, events: Sequence[Envelope], dead: Sequence[DeadLetter] = ()) -> None: ...

    def close(self) -> None: ...

    def describe(self) -> dict[str, Any]: ...
