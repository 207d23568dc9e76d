"""The ``fleetlog`` command: a thin shell over the library.

Each command module exposes ``COMMANDS``; a command parses options, calls one library function and
renders the result with ``cli.output``. Expected failures become one-line errors (``cli.errors``).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from fleetlog.cli.errors import EXIT_INTERRUPTED, Interrupted, translate

# Command modules, in the order `fleetlog --help` lists them. Add yours here.
COMMAND_MODULES = (
    "fleetlog.cli.demo",
    "fleetlog.cli.kafka_cmd",
    "fleetlog.cli.store_cmd",
    "fleetlog.cli.simulate",
    "fleetlog.cli.ingest_cmd",
    "fleetlog.cli.sql_cmd",
    "fleetlog.cli.replay_cmd",
    "fleetlog.cli.report_cmd",
    "fleetlog.cli.state_cmd",
    "fleetlog.cli.recommend_cmd",
    "fleetlog.cli.whatif_cmd",
    "fleetlog.cli.analyze",
    "fleetlog.cli.import_cmd",
    "fleetlog.cli.act_cmd",
)


class FleetlogGroup(click.Group):
    """Turns every expected failure into its one-line message and exit code, in one place:
    ``FleetlogError`` (``translate``), and Ctrl-C, which click would report as "Aborted!" with
    exit code 1, into "Interrupted." with 130 (``Interrupted``)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            raise Interrupted() from exc
        except click.ClickException:
            raise
        except Exception as exc:
            error = translate(exc)
            if error is None:
                raise
            raise error from exc


@click.group(cls=FleetlogGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fleetlog")
def cli() -> None:
    """fleetlog: event-sourced telemetry and failure analysis for GPU training clusters.

    Generators and real-format readers emit events into Kafka; ingestion lands them in DuckDB;
    analysis detects failures, diagnoses root causes and recommends actions.

    Example: fleetlog demo
    """


for _name in COMMAND_MODULES:
    for _command in importlib.import_module(_name).COMMANDS:
        cli.add_command(_command)


def main() -> None:
    try:
        cli.main(prog_name="fleetlog", standalone_mode=True)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    main()
