"""``fleetlog state``: the fleet at a moment in time."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

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

    Example: fleetlog state --db fleet.duckdb --at 2026-01-05T06:00:00Z --table
    """
    state = fleet_state(db, at)
    if fmt == "table":
        render(state["nodes_not_up"], fmt, title=f"Nodes not up at {at.isoformat()}")
        render(state["job_list"], fmt, title="Jobs")
        render(state["open_incidents"], fmt, title="Open incidents")
        return
    render(state, fmt)


COMMANDS = [state_command]
