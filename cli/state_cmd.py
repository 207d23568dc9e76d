"""``fleetlog state``: the fleet at a moment in time."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import click

from fleetlog.analysis.state import fleet_state
from fleetlog.cli.output import output_options, render
from fleetlog.cli.params import UtcTime, db_option


@click.command("state")
@db_option
@click.option("--at", "at", type=UtcTime(), required=True,
              help="The moment: ISO 8601 with zone (2026-01-05T06:00:00Z) or relative to now "
              "(now, -15m, now-2h).")
@output_options
def state_command(db: tuple[Path, ...], at: datetime, fmt: str | None) -> None:
    """The fleet as it was at a moment: node health, jobs and open incidents, from the events.

    --table prints the counts, then the nodes not up, the jobs and the open incidents, a table
    each; --csv and --nl one row each (its `section`: node, job or incident). A time before the
    store's first event is an error (exit 1).

    Example: fleetlog state --db fleet.duckdb --at 2026-01-05T06:00:00Z --table
    """
    state = fleet_state(db, at)
    if fmt == "table":
        render({"at": state["at"], "nodes": state["nodes"], "jobs": state["jobs"]}, fmt)
        render(state["nodes_not_up"], fmt, title="Nodes not up")
        render(state["job_list"], fmt, title="Jobs")
        render(state["open_incidents"], fmt, title="Open incidents")
    elif fmt in ("csv", "nl"):
        render(_rows(state, columns_of_all=fmt == "csv"), fmt)
    else:
        render(state, fmt)


_SECTIONS = (("node", "nodes_not_up"), ("job", "job_list"), ("incident", "open_incidents"))


def _rows(state: dict[str, Any], *, columns_of_all: bool) -> list[dict[str, Any]]:
    """One row per node not up, job and open incident; ``columns_of_all``: each with the columns
    of all three (a section's row leaves the others' empty), one table a spreadsheet takes."""
    rows = [{"section": section, **row} for section, key in _SECTIONS for row in state[key]]
    if not columns_of_all:
        return rows
    columns = dict.fromkeys(["section", *(k for row in rows for k in row)])
    return [{column: row.get(column) for column in columns} for row in rows]


COMMANDS = [state_command]
