"""``fleetlog sql``: read-only SQL over the store's public views."""

from __future__ import annotations

from pathlib import Path
from typing import Final

import click

from fleetlog.analysis.sql import (
    DEFAULT_MEMORY_LIMIT,
    DEFAULT_TIMEOUT_S,
    QueryError,
    QueryResult,
    ReadOnlyStore,
)
from fleetlog.cli.errors import EXIT_INTERRUPTED
from fleetlog.cli.output import output_options, render
from fleetlog.cli.params import db_option
from fleetlog.ingest.store.database import valid_memory_limit

TABLE_MAX_ROWS: Final = 1000  # rows a table shows unless --max-rows says otherwise


def _memory_limit(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not valid_memory_limit(value):
        raise click.BadParameter(f"{value!r} is not a size like 512MB or 2GB")
    return value.strip()


@click.command("sql")
@db_option
@click.argument("query", required=False)
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0), default=DEFAULT_TIMEOUT_S,
              show_default=True, metavar="SECONDS",
              help="Stop a query that runs longer (0: no limit).")
@click.option("--memory-limit", default=DEFAULT_MEMORY_LIMIT, show_default=True, metavar="SIZE",
              callback=_memory_limit,
              help="DuckDB's memory for the query; one that needs more fails (sql never spills "
              "to disk).")
@click.option("--max-rows", type=click.IntRange(min=0), default=None, metavar="N",
              help=f"Print at most N rows and say how many more there were (default: "
              f"{TABLE_MAX_ROWS} for --table and the prompt, all otherwise; 0: no limit).")
@output_options(default=None, help_texts={
    "json": "Output JSON (the default for a QUERY).",
    "table": "Output a table for people (the default at the prompt)."})
def sql_command(db: tuple[Path, ...], query: str | None, timeout_s: float, memory_limit: str,
                max_rows: int | None, fmt: str | None) -> None:
    """Run a read-only SQL query over the public views; no QUERY opens a prompt.

    Columns that share a name are all kept: the second `a` is `a_2`. JSON has no NaN or
    Infinity: they print as null (--csv and --table print nan and inf). Ctrl-C stops the query
    and exits with code 130.

    Example: fleetlog sql --db fleet.duckdb --table "SELECT xid, name, action, count(*) AS n
    FROM xid_events GROUP BY ALL ORDER BY n DESC"
    """
    try:
        store = ReadOnlyStore(db, memory_limit=memory_limit)
        try:
            if query is not None:
                _show(store.query(query, max_rows=_limit(max_rows, fmt), timeout_s=timeout_s),
                      fmt)
                return
            _prompt(store, fmt or "table", timeout_s, max_rows)
        finally:
            store.close()
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        click.get_current_context().exit(EXIT_INTERRUPTED)


def _limit(max_rows: int | None, fmt: str | None) -> int | None:
    if max_rows is None:
        return TABLE_MAX_ROWS if fmt == "table" else None
    return max_rows or None


def _show(result: QueryResult, fmt: str | None) -> None:
    render(result.records(), fmt, columns=result.columns)
    if result.cut:
        more = "row" if result.cut == 1 else "rows"
        least = "" if result.cut_exact else "at least "
        click.echo(f"{least}{result.cut} more {more} not shown (--max-rows {len(result.rows)}; "
                   "--max-rows 0 shows all)", err=True)


def _prompt(store: ReadOnlyStore, fmt: str, timeout_s: float, max_rows: int | None) -> None:
    click.echo("fleetlog sql (read-only). End a query with ';'. Ctrl-D quits.", err=True)
    buffer: list[str] = []
    while True:
        try:
            line = input("fleetlog> " if not buffer else "     ...> ")
        except EOFError:
            click.echo(err=True)
            # The last query may lack its ';': run it rather than drop it without a word.
            if "\n".join(buffer).strip():
                _run_one(store, "\n".join(buffer), fmt, timeout_s, max_rows)
            return
        buffer.append(line)
        if not line.rstrip().endswith(";"):
            continue
        text, buffer = "\n".join(buffer), []
        _run_one(store, text, fmt, timeout_s, max_rows)


def _run_one(store: ReadOnlyStore, text: str, fmt: str, timeout_s: float,
             max_rows: int | None) -> None:
    try:
        result = store.query(text, max_rows=_limit(max_rows, fmt), timeout_s=timeout_s)
    except QueryError as exc:
        click.echo(f"Error: {exc}", err=True)
        return
    _show(result, fmt)


COMMANDS = [sql_command]
