"""Read-only SQL over one store or several shards, for `fleetlog sql` and scripts.

Nothing can change a store through here: single files open read-only, shards attach read-only,
and external access (ATTACH, COPY ... TO, file readers) is switched off and locked before the
user's query runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from fleetlog.ingest.contract.errors import FleetlogError
from fleetlog.ingest.store import open_union


class QueryError(FleetlogError):
    """The query failed; the message is DuckDB's first line."""


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


class ReadOnlyStore:
    """A connection to one or more store files that refuses to change anything."""

    def __init__(self, paths: Sequence[str | Path]) -> None:
        self.con = open_union(paths)
        self.con.execute("SET enable_external_access = false")
        self.con.execute("SET lock_configuration = true")

    def query(self, sql: str) -> QueryResult:
        try:
            cursor = self.con.execute(sql)
            columns = [d[0] for d in cursor.description] if cursor.description else []
            rows = cursor.fetchall() if cursor.description else []
        except duckdb.Error as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise QueryError(f"SQL error: {first}") from exc
        return QueryResult(columns, rows)

    def close(self) -> None:
        self.con.close()


def run_query(paths: Sequence[str | Path], sql: str) -> QueryResult:
    store = ReadOnlyStore(paths)
    try:
        return store.query(sql)
    finally:
        store.close()
