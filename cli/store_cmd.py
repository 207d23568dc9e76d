"""``fleetlog init``: create or upgrade a DuckDB store."""

from __future__ import annotations

from pathlib import Path

import click

from fleetlog.cli.output import output_options, render
from fleetlog.ingest.store import describe_store


@click.command("init")
@click.option("--db", type=click.Path(path_type=Path), required=True,
              help="The DuckDB file to create or upgrade.")
@output_options
def init_command(db: Path, fmt: str | None) -> None:
    """Create the store's schema (idempotent) and list its public views.

    Example: fleetlog init --db fleet.duckdb --table
    """
    render(describe_store(db), fmt)


COMMANDS = [init_command]
