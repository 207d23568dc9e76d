"""``fleetlog sql``: read-only SQL over the store's public views."""

from __future__ import annotations

import contextlib
import sys
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
from fleetlog.cli.params import Duration, db_option, duration_text
from fleetlog.ingest.store.database import valid_memory_limit

TABLE_MAX_ROWS: Final = 1000  # rows a table shows unless --max-rows says otherwise


def _memory_limit(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not valid_memory_limit(value):
        raise click.BadParameter(f"{value!r} is not a size like 512MB or 2GB")
    return value.strip()


@click.command("sql")
@db_option
@click.argument("query", required=False)
@click.option("--timeout", "timeout_s", type=Duration(zero="no limit"),
              default=duration_text(DEFAULT_TIMEOUT_S), show_default=True,
              help="Stop a query that runs longer (e.g. 30s, 10m; 0: no limit).")
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

    At the prompt (and as QUERY), .tables lists the tables and views, .schema NAME shows one's
    columns, .help the rest. A query runs when its line ends with ';', and the last one at the
    end of the input without it (piped: `fleetlog sql --db fleet.duckdb < queries.sql`).

    Columns that share a name are all kept: the second `a` is `a_2`. JSON has no NaN or
    Infinity: they print as null (--csv and --table print nan and inf). Ctrl-C stops the query
    and exits with code 130.

    Example: fleetlog sql --db fleet.duckdb --table "SELECT xid, name, action, count(*) AS n
    FROM xid_events GROUP BY ALL ORDER BY n DESC"
    """
    try:
        store = ReadOnlyStore(db, memory_limit=memory_limit)
        try:
            if query is not None and query.lstrip().startswith("."):
                _dot(store, query, fmt)
                return
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


# The prompt's dot commands (sqlite3's and duckdb's names), for .help.
DOT_COMMANDS: Final = {
    ".tables": "list the tables and views a query can name",
    ".schema NAME": "the columns of table or view NAME and their types (no NAME: all of them)",
    ".help": "this list",
    ".quit": "leave (as Ctrl-D does)",
}


def _prompt(store: ReadOnlyStore, fmt: str, timeout_s: float, max_rows: int | None) -> None:
    """Queries end with ';'; a line starting with '.' is a dot command. Prompts are shown only
    to a terminal: piped input gives only the results."""
    interactive = sys.stdin.isatty()
    if interactive:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401  # line editing and history for input()
    click.echo("fleetlog sql (read-only). End a query with ';'. .help lists the dot commands; "
               "Ctrl-D quits.", err=True)
    buffer: list[str] = []
    while True:
        try:
            line = input(("fleetlog> " if not buffer else "     ...> ") if interactive else "")
        except EOFError:
            if interactive:
                click.echo(err=True)  # the shell's prompt on a line of its own
            # The last query may lack its ';': run it rather than drop it without a word.
            if "\n".join(buffer).strip():
                _run_one(store, "\n".join(buffer), fmt, timeout_s, max_rows)
            return
        if not buffer and line.lstrip().startswith("."):
            try:
                if not _dot(store, line, fmt):
                    return
            except QueryError as exc:
                click.echo(f"Error: {exc}", err=True)
            continue
        buffer.append(line)
        if not line.rstrip().endswith(";"):
            continue
        text, buffer = "\n".join(buffer), []
        _run_one(store, text, fmt, timeout_s, max_rows)


def _dot(store: ReadOnlyStore, line: str, fmt: str | None) -> bool:
    """Run one dot command and show its answer; False when it says to leave."""
    command, _, argument = line.strip().partition(" ")
    if command in (".quit", ".exit"):
        return False
    if command == ".help":
        width = max(len(name) for name in DOT_COMMANDS)
        click.echo("\n".join(f"{name.ljust(width)}  {what}"
                              for name, what in DOT_COMMANDS.items()))
        click.echo("Anything else is SQL, run when a line ends with ';' (or at the end of "
                   "input).")
    elif command == ".tables":
        _show(store.relations(), fmt)
    elif command == ".schema":
        _show(store.columns(argument.strip() or None), fmt)
    else:
        raise QueryError(f"unknown command {command} (.help lists them)")
    return True


def _run_one(store: ReadOnlyStore, text: str, fmt: str, timeout_s: float,
             max_rows: int | None) -> None:
    try:
        result = store.query(text, max_rows=_limit(max_rows, fmt), timeout_s=timeout_s)
    except QueryError as exc:
        click.echo(f"Error: {exc}", err=True)
        return
    _show(result, fmt)


COMMANDS = [sql_command]
