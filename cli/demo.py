"""``fleetlog demo``: the whole pipeline in one command."""

from __future__ import annotations

from pathlib import Path

import click

from fleetlog.cli.output import output_options, render
from fleetlog.cli.params import bootstrap_option
from fleetlog.demo import run_demo


@click.command("demo")
@click.option("--out", type=click.Path(path_type=Path), default=Path(".fleetlog/demo"),
              show_default=True, help="Folder for the demo's store and outputs.")
@bootstrap_option
# A table: `demo` is the first command a person runs, to see the pipeline work end to end.
@output_options(default="table")
def demo_command(out: Path, bootstrap: str | None, fmt: str | None) -> None:
    """Run the pipeline end to end on a small simulated cluster and say where the results are.

    Uses Kafka when a broker is given or running, the embedded mode otherwise, and says which.

    Example: fleetlog demo --table
    """
    render(run_demo(out, bootstrap=bootstrap, progress=click.echo), fmt)


COMMANDS = [demo_command]
