"""``fleetlog recommend``: component actions for the stored incidents."""

from __future__ import annotations

from pathlib import Path

import click

from fleetlog.analysis.recommend import recommend
from fleetlog.analysis.remediation import RemediationConfig
from fleetlog.cli.output import output_options, render
from fleetlog.cli.params import (
    bootstrap_option,
    db_option,
    deprecated_alias,
    topic_prefix_option,
)

_CONFIG_FILE = click.Path(path_type=Path, exists=True)


@click.command("recommend")
@deprecated_alias("--config", "--remediation-config", "config_path", type=_CONFIG_FILE)
@db_option
@click.option("--remediation-config", "config_path", type=_CONFIG_FILE,
              default=None, help="Remediation thresholds (TOML; every key and its default: "
              "docs/examples/remediation.toml).")
@click.option("--write/--no-write", default=True, show_default=True,
              help="Store the recommendations (the `recommendations` view).")
@click.option("--publish", is_flag=True,
              help="Also publish them on <prefix>.analysis (Kafka), where `fleetlog act "
              "--follow` takes them.")
@bootstrap_option
@topic_prefix_option
@output_options
def recommend_command(db: tuple[Path, ...], config_path: Path | None, write: bool,
                      publish: bool, bootstrap: str | None, topic_prefix: str | None,
                      fmt: str | None) -> None:
    """What to do about each incident: NVIDIA's catalog action, escalated on recurrence, and
    for the jobs it hit: restart on spares (or migrate to another virtual cluster when the
    job's own lacks healthy nodes), checkpoint now (then swap a suspect node for a spare),
    Daly's checkpoint interval. With --json each recommendation carries its event id and
    `after`: the id of the one to carry out first (a swap follows its checkpoint).

    Example: fleetlog recommend --db fleet.duckdb --table
    """
    from fleetlog.ingest.kafka.settings import settings_for

    config = RemediationConfig.load(config_path) if config_path else None
    publish_to = settings_for(bootstrap, topic_prefix=topic_prefix) if publish else None
    render(recommend(db, config=config, write=write, publish_to=publish_to,
                     topic_prefix=topic_prefix), fmt,
           columns=["incident_id", "target", "action", "catalog_action", "gpu_hours_saved",
                    "reason"])


COMMANDS = [recommend_command]
