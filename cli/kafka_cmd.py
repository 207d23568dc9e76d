"""``fleetlog kafka up|down|status``: the local Apache Kafka broker."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from fleetlog.cli.errors import EXIT_NOT_ANSWERING
from fleetlog.cli.output import output_options, render
from fleetlog.cli.params import Duration, kafka_dir_option
from fleetlog.ingest.kafka import broker


@click.group("kafka")
def kafka_group() -> None:
    """Run a real local Apache Kafka broker (KRaft, no Docker).

    The jars come from Maven Central on first use and are cached.

    Example: fleetlog kafka up && fleetlog kafka status --table
    """


@kafka_group.command("up")
@kafka_dir_option
@click.option("--port", type=click.IntRange(1, 65535), default=broker.DEFAULT_PORT,
              show_default=True,
              help="Broker port on 127.0.0.1.")
@click.option("--controller-port", type=click.IntRange(1, 65535), default=None,
              help="KRaft controller port (default: --port + 1).")
@click.option("--timeout", type=Duration(), default="90s", show_default=True,
              help="How long to wait for the broker to answer (e.g. 90s, 5m).")
@click.option("--heap", default="1g", show_default=True, help="JVM heap (-Xmx).")
@output_options
def up_command(
    data_dir: Path | None, port: int, controller_port: int | None, timeout: float, heap: str,
    fmt: str | None,
) -> None:
    """Fetch (once), format (once) and start the broker; wait until it answers.

    Example: fleetlog kafka up --port 9092
    """
    state = broker.up(data_dir, port=port, controller_port=controller_port, timeout_s=timeout,
                      heap=heap)
    render(_readable(state.to_json()), fmt)


@kafka_group.command("down")
@kafka_dir_option
@output_options
def down_command(data_dir: Path | None, fmt: str | None) -> None:
    """Stop the broker started from the data directory.

    Example: fleetlog kafka down
    """
    state = broker.down(data_dir)
    render({"stopped": state is not None, "pid": state.pid if state else None}, fmt)


@kafka_group.command("status")
@kafka_dir_option
@output_options
def status_command(data_dir: Path | None, fmt: str | None) -> None:
    """Report the bootstrap address, pid, log file and whether the broker answers.

    Exits 0 when the broker answers, 3 when none is running or it does not answer (the status
    is printed either way), so a script can test it: fleetlog kafka status >/dev/null || ...

    Example: fleetlog kafka status --json
    """
    status = broker.status(data_dir)
    render(_readable(status), fmt)
    if not status["answering"]:
        click.get_current_context().exit(EXIT_NOT_ANSWERING)


def _readable(state: dict[str, Any]) -> dict[str, Any]:
    """The broker's state with its start as a time (ISO 8601, UTC), not Unix seconds."""
    started = state.get("started_at")
    if isinstance(started, int | float):
        return {**state, "started_at": datetime.fromtimestamp(started, UTC)}
    return state


COMMANDS = [kafka_group]
