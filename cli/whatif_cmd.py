"""``fleetlog whatif``: replay the recorded jobs and failures under checkpoint/restart policies."""

from __future__ import annotations

from pathlib import Path

import click

from analysis.whatif import POLICIES
from analysis.whatif_data import whatif
from cli.output import output_options, render
from cli.params import Duration, db_option

_COLUMNS = ["policy", "ettr", "ettr_vs_oracle", "lost_gpu_hours", "checkpoint_gpu_hours",
            "restarts", "jobs", "wall_gpu_hours"]


@click.command("whatif")
@db_option
@click.option("--policy", "policies", multiple=True, type=click.Choice(POLICIES),
              help="Policy to replay (repeatable; default: all four). The oracle is always "
              "computed for the ratio.")
@click.option("--watchdog", type=Duration(), default=1800.0, show_default=True,
              help="How long a hang goes unnoticed without fleetlog (e.g. 30m).")
@output_options
def whatif_command(db: tuple[Path, ...], policies: tuple[str, ...], watchdog: float,
                   fmt: str | None) -> None:
    """What each checkpoint/restart policy would have cost on the recorded failures: ETTR, lost
    and checkpoint GPU-hours, restarts, and the ratio to a perfect-foresight oracle. Run
    `fleetlog analyze` on the store first (fleetlog's policy uses its incidents).

    Example: fleetlog whatif --db fleet.duckdb --policy baseline --policy fleetlog --table
    """
    result = whatif(db, policies or POLICIES, watchdog_s=watchdog)
    if fmt in ("table", "csv"):
        inputs = result["inputs"]
        render(result["policies"], fmt, columns=_COLUMNS, title=(
            f"{inputs['jobs']} jobs, {inputs['failures']} failures ({inputs['implicit']} "
            f"implicit, {inputs['warned']} warned, {inputs['swapped']} swapped, "
            f"{inputs['waited_for_nodes']} waited for nodes, {inputs['migrations']} migrated), "
            f"{inputs['false_alarms']} false alarms, node MTBF {inputs['node_mtbf_h']} h "
            f"({inputs['node_mtbf_unwarned_h']} h counting the unwarned failures only)"))
    else:
        render(result, fmt)


COMMANDS = [whatif_command]
