"""``fleetlog sql``: read-only SQL over the store's public views."""

from __future__ import annotations

from pathlib import Path

import click

from fleetlog.analysis.sql import QueryError, ReadOnlyStore
from fleetlog.cli.output import output_options, render
from fleetlog.cli.params import db_option


@click.command("sql")
@db_option
@click.argument("query", required=False)
@output_options
def sql_command(db: tuple[Path, ...], query: str | None, fmt: str | None) -> None:
    """Run a read-only SQL query over the public views; no QUERY opens a prompt.

    Example: fleetlog sql --db fleet.duckdb --table "SELECT xid, name, action, count(*) AS n
    FROM xid_events GROUP BY ALL ORDER BY n DESC"
    """
    store = ReadOnlyStore(db)
    try:
        if query is not None:
            result = store.query(query)
            render(result.records(), fmt, columns=result.columns)
            return
        _prompt(store, fmt or "table")
    finally:
        store.close()


def _prompt(store: ReadOnlyStore, fmt: str) -> None:
    click.echo("fleetlog sql (read-only). End a query with ';'. Ctrl-D quits.", err=True)
    buffer: list[str] = []
    while True:
        try:
            line = input("fleetlog> " if not buffer else "     ...> ")
        except EOFError:
            click.echo(err=True)
            return
        buffer.append(line)
        if not line.rstrip().endswith(";"):
            continue
        text, buffer = "\n".join(buffer), []
        try:
            result = store.query(text)
        except QueryError as exc:
            click.echo(f"Error: {exc}", err=True)
            continue
        render(result.records(), fmt, columns=result.columns)


COMMANDS = [sql_command]
