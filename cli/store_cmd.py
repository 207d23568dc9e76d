"""``fleetlog init``: create or upgrade a DuckDB store; ``fleetlog rollup``: roll up its hours."""

from __future__ import annotations

from pathlib import Path

import click

from fleetlog.cli.output import output_options, render
from fleetlog.cli.progress import progress_reporter
from fleetlog.ingest.store import describe_store
from fleetlog.ingest.store.writer import rollup_store


@click.command("init")
@click.option("--db", type=click.Path(path_type=Path), required=True,
              help="The DuckDB file to create or upgrade.")
@output_options
def init_command(db: Path, fmt: str | None) -> None:
    """Create the store's schema (idempotent) and list its public views.

    Example: fleetlog init --db fleet.duckdb --table
    """
    render(describe_store(db), fmt)


@click.command("rollup")
@click.option("--db", type=click.Path(path_type=Path), required=True,
              help="The DuckDB store file, or a folder of shards (each file rolled up).")
@output_options
def rollup_command(db: Path, fmt: str | None) -> None:
    """Roll up every hour of the store's samples that has no exact rollup yet.

    Writers keep the hourly rollups as they land samples (docs/design.md#rollups); this is for
    a store landed before they existed, or one whose hours late samples made stale. The
    analysis computes any hour without one from the samples, so this only makes it faster.
    Prints JSON: hours rolled up, their source rows, seconds (and each file's, for a folder).

    Example: fleetlog rollup --db fleet.duckdb
    """
    with progress_reporter("rolling up", unit="hours") as report:
        render(rollup_store(db, lambda done, _total: report(done)), fmt)


COMMANDS = [init_command, rollup_command]
