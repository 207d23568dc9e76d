"""``StoreSink``: the one ``Sink`` that lands events in a store, through ``StoreWriter``.

The simulator's embedded mode (``simulate --to duckdb:``), ``fleetlog import --db`` and ``scrape
--to duckdb:``, ``replay --to duckdb:`` and analysis (incidents it stores) each had a class or an
inline function of their own that did exactly this: hand events and dead letters to
``StoreWriter.write_batch`` and add up its results. They use this one now.

Each ``write`` is one transaction (an imported file, a replay window, a scrape, the incidents of
one analysis), unless ``batch_rows`` is given: then writes are buffered and landed together once
they hold that many rows (a sample event counts its sample rows, any other event or dead letter
one), so the simulator's small chunks (one scrape tick each) land in transactions of the size
DuckDB writes best. Event ids make a second landing of the same events a no-op (``duplicates``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb

from fleetlog.ingest import contract as c
from fleetlog.ingest.contract import DeadLetter, SinkTotals
from fleetlog.ingest.store.writer import StoreWriter, open_writer


class StoreSink:
    """Lands events and dead letters in a store (see the module docstring)."""

    def __init__(self, writer: StoreWriter, *, target: str, batch_rows: int | None = None,
                 owns_connection: bool = True) -> None:
        self.writer = writer
        self.target = target
        self.totals = SinkTotals()
        self.batch_rows = batch_rows
        self._owns_connection = owns_connection
        self._events: list[c.Envelope] = []
        self._dead: list[DeadLetter] = []
        self._rows = 0

    @classmethod
    def open(cls, path: str | Path, *, batch_rows: int | None = None) -> StoreSink:
        """Open (creating or upgrading) the store file ``path``; ``close`` closes it."""
        return cls(open_writer(path), target=f"duckdb:{path}", batch_rows=batch_rows)

    @classmethod
    def sharing(cls, con: duckdb.DuckDBPyConnection) -> StoreSink:
        """Write on a connection the caller owns: ``close`` leaves it open (analysis stores its
        results on the connection it read the store with)."""
        row = con.execute("SELECT path FROM duckdb_databases() "
                          "WHERE database_name = current_database()").fetchone()
        return cls(StoreWriter(con), target=f"duckdb:{row[0] if row else ''}",
                   owns_connection=False)

    def write(self, events: Sequence[c.Envelope], dead: Sequence[DeadLetter] = ()) -> None:
        if self.batch_rows is None:
            self._land(events, dead)
            return
        self._events.extend(events)
        self._dead.extend(dead)
        for event in events:
            if isinstance(event.payload, c.GpuSampled | c.PortSampled):
                self._rows += event.payload.rows
        self._rows += len(events) + len(dead)
        if self._rows >= self.batch_rows:
            self.flush()

    def flush(self) -> None:
        """Land what is buffered (with ``batch_rows``), if anything."""
        if self._events or self._dead:
            self._land(self._events, self._dead)
        self._events, self._dead, self._rows = [], [], 0

    def _land(self, events: Sequence[c.Envelope], dead: Sequence[DeadLetter]) -> None:
        result = self.writer.write_batch(events, dead)
        self.totals.events += result.events
        self.totals.duplicates += result.duplicates
        self.totals.dead_letters += result.dead_letters
        for table, count in result.rows.items():
            self.totals.rows[table] = self.totals.rows.get(table, 0) + count

    def close(self) -> None:
        try:
            self.flush()
        finally:
            if self._owns_connection:
                self.writer.close()

    def describe(self) -> dict[str, Any]:
        return {"to": self.target, "landed": self.totals.events,
                "duplicates": self.totals.duplicates}
