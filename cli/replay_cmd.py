"""``fleetlog replay``: re-publish stored events in order, with their timing, at a speed."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click

from fleetlog.cli.output import output_options, render
from fleetlog.cli.params import (
    FiniteFloat,
    SinkUri,
    db_option,
    since_option,
    topic_prefix_option,
    until_option,
)
from fleetlog.cli.progress import progress_reporter
from fleetlog.ingest.replay import replay_to


@click.command("replay")
@db_option
@since_option
@until_option
@click.option("--speed", type=FiniteFloat(min=0), default=0.0, show_default=True,
              help="1 = real time, 60 = a simulated minute per second, 0 = as fast as possible.")
@click.option("--to", "target", type=SinkUri(("kafka", "duckdb")), required=True,
              help="Where the events go: kafka://HOST:PORT or duckdb:PATH.")
@topic_prefix_option
@output_options
def replay_command(
    db: tuple[Path, ...], since: datetime | None, until: datetime | None, speed: float,
    target: tuple[str, str], topic_prefix: str | None, fmt: str | None,
) -> None:
    """Re-publish stored events in their original order per key and with their relative timing.

    A --since slice starts with what it needs from before it: the inventory (racks, nodes,
    switches, links) and the submissions and placements of its jobs, so its analysis knows the
    topology.

    Example: fleetlog replay --db fleet.duckdb --since 2026-01-05T00:00:00Z --speed 60
    --to kafka://127.0.0.1:9092
    """
    with progress_reporter("replaying", unit="events") as report:
        stats = replay_to(db, target, since=since, until=until, speed=speed,
                          topic_prefix=topic_prefix, progress=lambda s: report(s.events))
    render({"target": f"{target[0]}:{target[1]}", **vars(stats)}, fmt)


COMMANDS = [replay_command]
