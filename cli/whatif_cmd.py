"""``fleetlog whatif``: replay the recorded jobs and failures under checkpoint/restart policies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from fleetlog.analysis.whatif import POLICIES
from fleetlog.analysis.whatif_data import whatif
from fleetlog.cli.output import output_options, render
from fleetlog.cli.params import Duration, FiniteFloat, db_option

_COLUMNS = ["policy", "ettr", "ettr_vs_oracle", "lost_gpu_hours", "checkpoint_gpu_hours",
            "restarts", "jobs", "wall_gpu_hours"]


@click.command("whatif")
@db_option
@click.option("--policy", "policies", multiple=True, type=click.Choice(POLICIES),
              help="Policy to replay (repeatable; default: all four). The oracle is always "
              "computed for the ratio.")
@click.option("--watchdog", type=Duration(), default="30m", show_default=True,
              help="How long a hang goes unnoticed without fleetlog (e.g. 30m).")
@click.option("--gap", "gap_points", type=FiniteFloat(0.01, 100.0), default=2.0,
              show_default=True,
              help="Points of ETTR behind the oracle to size the checkpoint speed-up for (the "
              "'expected' section: how much faster checkpoints must get for scheduled "
              "checkpointing to cost no more than this).")
@output_options
def whatif_command(db: tuple[Path, ...], policies: tuple[str, ...], watchdog: float,
                   gap_points: float, fmt: str | None) -> None:
    """What each checkpoint/restart policy would have cost on the recorded failures: ETTR, lost
    and checkpoint GPU-hours, restarts, and the ratio to a perfect-foresight oracle. Run
    `fleetlog analyze` on the store first (fleetlog's policy uses its incidents).

    The 'expected' section is the floor under any policy without foresight: what checkpointing
    on a schedule costs in expectation (checkpoint writes plus work redone after the failures
    no warning covered, at Daly's interval), and how many times faster checkpoints would have
    to be for that cost to fall to --gap points.

    Example: fleetlog whatif --db fleet.duckdb --policy baseline --policy fleetlog --table
    """
    result = whatif(db, policies or POLICIES, watchdog_s=watchdog, gap_points=gap_points)
    if fmt in ("table", "csv"):
        inputs = result["inputs"]
        render(result["policies"], fmt, columns=_COLUMNS, title=(
            f"{inputs['jobs']} jobs, {inputs['failures']} failures ({inputs['implicit']} "
            f"implicit, {inputs['warned']} warned, {inputs['swapped']} swapped, "
            f"{inputs['waited_for_nodes']} waited for nodes, {inputs['migrations']} migrated), "
            f"{inputs['false_alarms']} false alarms, node MTBF {inputs['node_mtbf_h']} h "
            f"({inputs['node_mtbf_unwarned_h']} h counting the unwarned failures only); "
            f"{_expected_text(result['expected'])}"))
    else:
        render(result, fmt)


def _expected_text(expected: dict[str, Any]) -> str:
    cost = (f"checkpointing on a schedule costs {expected['periodic_loss_points']} points of "
            "ETTR in expectation")
    speedup, gap = expected["checkpoint_speedup_for_gap"], expected["gap_points"]
    if speedup == 1.0:
        return f"{cost} (within {gap})"
    faster = f"{speedup}x" if speedup is not None else "over 10,000x"
    return f"{cost}, {gap} with checkpoints {faster} faster"


COMMANDS = [whatif_command]
