"""Read-only SQL over one store or several shards, for `fleetlog sql` and scripts.

Nothing can change a store through here, nor read or write any file: the files are attached
read-only, the public views are fleetlog's (never the file's own SQL), file access is switched
off and the configuration locked before the user's query runs (``store.open_union``), and DuckDB
gets no temp folder, the one place it would still let SQL read and write files with file access
off; a query that needs more than the memory limit fails instead of spilling. A query runs for at
most ``timeout_s`` seconds (then DuckDB is interrupted), and Ctrl-C interrupts it the same way.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import duckdb

from fleetlog.ingest.contract.errors import FleetlogError
from fleetlog.ingest.store import open_union

DEFAULT_MEMORY_LIMIT: Final = "2GB"
DEFAULT_TIMEOUT_S: Final = 300  # seconds
_COUNT_CHUNK: Final = 65_536  # rows fetched at a time when counting the rows cut
# Rows past ``max_rows`` counted at most (~1 s): past that the count says "at least".
_COUNT_CAP: Final = 1_000_000


class QueryError(FleetlogError):
    """The query failed; the message is DuckDB's first line."""


@dataclass(frozen=True)
class QueryResult:
    """A query's rows. ``columns`` are unique: a name seen before gets ``_2``, ``_3``...
    (``SELECT 1 AS a, 2 AS a`` gives ``a`` and ``a_2``); ``cut`` counts the rows past
    ``max_rows``, which are not kept: all of them, or when ``cut_exact`` is false the first
    ``_COUNT_CAP`` (there were more)."""

    columns: list[str]
    rows: list[tuple[Any, ...]]
    cut: int = 0
    cut_exact: bool = True

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


def unique_columns(names: Sequence[str]) -> list[str]:
    """Names as given, but a repeated one numbered (``a, a`` -> ``a, a_2``), never clashing
    with a name the query gave another column."""
    taken = set(names)
    seen: set[str] = set()
    out: list[str] = []
    for name in names:
        if name in seen:
            index = 2
            while f"{name}_{index}" in taken:
                index += 1
            name = f"{name}_{index}"
            taken.add(name)
        seen.add(name)
        out.append(name)
    return out


class ReadOnlyStore:
    """A connection to one or more store files that refuses to change anything or touch files."""

    def __init__(self, paths: Sequence[str | Path], *,
                 memory_limit: str = DEFAULT_MEMORY_LIMIT) -> None:
        self.memory_limit = memory_limit
        self.con = open_union(paths, memory_limit=memory_limit, spill=False)

    def query(self, sql: str, *, max_rows: int | None = None,
              timeout_s: float | None = None) -> QueryResult:
        """Run ``sql``; keep the first ``max_rows`` rows (all when None) and count the rest.

        ``timeout_s`` (None or 0: no limit) interrupts DuckDB when the query, fetching included,
        runs longer. Ctrl-C interrupts it too and raises ``KeyboardInterrupt`` once DuckDB has
        stopped. The query runs in a worker thread so that both reach it: the main thread only
        waits, where Python delivers Ctrl-C.
        """
        try:
            return self._interruptible(lambda: self._run(sql, max_rows), timeout_s)
        except duckdb.InterruptException as exc:
            raise QueryError(f"the query ran longer than its time limit of {timeout_s:g} s "
                             "(--timeout) and was stopped") from exc
        except duckdb.OutOfMemoryException as exc:
            raise QueryError(f"SQL error: {_first_line(exc)}: the query needs more than its "
                             f"memory limit of {self.memory_limit} (--memory-limit); raise "
                             "it, or aggregate or filter more") from exc
        except duckdb.Error as exc:
            raise QueryError(f"SQL error: {_first_line(exc)}") from exc

    def relations(self) -> QueryResult:
        """What a query can name: ``name`` and ``kind``, ``table`` for the store's raw tables
        (read as the union of the shards) and ``view`` for the public views over them."""
        return self._catalog(
            "SELECT v.view_name AS name, CASE WHEN t.table_name IS NULL THEN 'view' "
            "ELSE 'table' END AS kind FROM duckdb_views() v LEFT JOIN (SELECT table_name "
            "FROM duckdb_tables() WHERE database_name = 'shard0') t "
            "ON t.table_name = v.view_name WHERE v.database_name = 'temp' AND NOT v.internal "
            "ORDER BY name", [])

    def columns(self, name: str | None = None) -> QueryResult:
        """The columns (``column``, ``type``) of the table or view ``name``, in order; with no
        name, every one's (``name``, ``column``, ``type``)."""
        select = ("SELECT table_name AS name, column_name AS column, data_type AS type "
                  "FROM duckdb_columns() WHERE database_name = 'temp'")
        if name is None:
            return self._catalog(f"{select} ORDER BY name, column_index", [])
        # Names are case-insensitive in DuckDB; quotes as SQL writes them are allowed.
        wanted = name.strip().rstrip(";").strip().strip('"')
        result = self._catalog(f"{select} AND lower(table_name) = lower(?) "
                               "ORDER BY column_index", [wanted])
        if not result.rows:
            raise QueryError(f"no table or view named {wanted!r} (.tables lists them)")
        return QueryResult(result.columns[1:], [row[1:] for row in result.rows])

    def _catalog(self, sql: str, params: list[Any]) -> QueryResult:
        try:
            cursor = self.con.execute(sql, params)
            return QueryResult([str(d[0]) for d in cursor.description or []], cursor.fetchall())
        except duckdb.Error as exc:
            raise QueryError(f"SQL error: {_first_line(exc)}") from exc

    def _run(self, sql: str, max_rows: int | None) -> QueryResult:
        cursor = self.con.execute(sql)
        if not cursor.description:
            return QueryResult([], [])
        columns = unique_columns([str(d[0]) for d in cursor.description])
        if max_rows is None:
            return QueryResult(columns, cursor.fetchall())
        rows = cursor.fetchmany(max_rows) if max_rows > 0 else []
        cut = 0
        while cut < _COUNT_CAP:  # fetched to be counted: DuckDB streams, memory stays flat
            chunk = cursor.fetchmany(_COUNT_CHUNK)
            if not chunk:
                return QueryResult(columns, rows, cut)
            cut += len(chunk)
        cursor.abort()  # the rest is dropped, not fetched
        return QueryResult(columns, rows, cut, cut_exact=False)

    def _interruptible(self, work: Callable[[], QueryResult],
                       timeout_s: float | None) -> QueryResult:
        outcome: list[QueryResult] = []
        failure: list[BaseException] = []
        done = threading.Event()  # not Thread.join: Ctrl-C in a join marks a live thread stopped

        def run() -> None:
            try:
                outcome.append(work())
            except BaseException as exc:  # handed to the waiting thread
                failure.append(exc)
            finally:
                done.set()

        threading.Thread(target=run, name="fleetlog-sql", daemon=True).start()
        try:
            if timeout_s and not done.wait(timeout_s):
                self.con.interrupt()  # DuckDB raises InterruptException in the worker
            while not done.wait(0.5):
                pass
        except KeyboardInterrupt:
            # Again until the worker is done: an interrupt that comes before DuckDB has started
            # the query (a loaded machine) is lost, and the query would then run to its end.
            while not done.wait(0.1):
                self.con.interrupt()
            raise
        if failure:
            raise failure[0]
        return outcome[0]

    def close(self) -> None:
        # Still busy only when a second Ctrl-C left the query stopping: the process is leaving.
        with contextlib.suppress(duckdb.Error):
            self.con.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def run_query(paths: Sequence[str | Path], sql: str, *, max_rows: int | None = None,
              timeout_s: float | None = DEFAULT_TIMEOUT_S,
              memory_limit: str = DEFAULT_MEMORY_LIMIT) -> QueryResult:
    store = ReadOnlyStore(paths, memory_limit=memory_limit)
    try:
        return store.query(sql, max_rows=max_rows, timeout_s=timeout_s)
    finally:
        store.close()
