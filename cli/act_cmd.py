"""``fleetlog act``: carry out recommendations through the scheduler, safely (docs/act.md)."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from fleetlog.cli.output import output_options, render
from fleetlog.cli.params import (
    Duration,
    bootstrap_option,
    deprecated_alias,
    duration_text,
    metrics_port_option,
    topic_prefix_option,
)

_COLUMNS = ("outcome", "action", "target", "command", "verified", "why", "action_id")


@click.command("act")
@deprecated_alias("--max-seconds", "--max-time", "max_time", type=Duration(), spell=duration_text)
@deprecated_alias("--idle-exit", "--until-idle", "until_idle", type=Duration(),
                  spell=duration_text)
@click.option("--db", type=click.Path(path_type=Path), required=True,
              help="The store whose recommendations to carry out (attempts land there too); "
              "with --follow, act's own store, filled from <prefix>.analysis.")
@click.option("--follow", is_flag=True,
              help="Stream: consume <prefix>.analysis (Kafka) into --db and act on each "
              "recommendation as it lands.")
@click.option("--execute", is_flag=True,
              help="Carry the actions out. Without it (the default) this is a dry run: it "
              "prints the exact commands and changes nothing.")
@click.option("--backend", type=click.Choice(["slurm"]), default="slurm", show_default=True,
              help="The scheduler to act through.")
@click.option("--slurm-conf", type=click.Path(path_type=Path, exists=True), default=None,
              help="Slurm's config file (default: $SLURM_CONF, else Slurm's own default).")
@click.option("--remediation-config", type=click.Path(path_type=Path, exists=True),
              default=None, help="TOML: [circuit_breaker] max_drain_share, window_s; "
              "[actions] max_per_node, window_s (the budget). See docs/act.md.")
@click.option("--name-map", type=click.Path(path_type=Path, exists=True), default=None,
              help="TOML: fleetlog's names -> the scheduler's ([nodes], [jobs], "
              "[partitions]); a name not listed is the same in both.")
@click.option("--resume", "resume", multiple=True, metavar="NODE",
              help="Instead of the recommendations: return NODE (repeatable) to service once "
              "repaired; only a node fleetlog drained, never one drained by someone else.")
@click.option("--checkpoint-signal", default="USR1", show_default=True,
              help="The signal checkpoint_now sends to the job's batch step.")
@click.option("--verify-timeout", type=Duration(), default="10s", show_default=True,
              help="How long to wait for the scheduler's state to show an action took.")
@metrics_port_option
@click.option("--max-time", type=Duration(), default=None,
              help="--follow: stop after this long (e.g. 10m; default: run until Ctrl-C).")
@click.option("--until-idle", type=Duration(), default=None,
              help="--follow: stop once nothing new arrived for this long (e.g. 30s).")
@bootstrap_option
@topic_prefix_option
@output_options
def act_command(db: Path, follow: bool, execute: bool, backend: str, slurm_conf: Path | None,
                remediation_config: Path | None, name_map: Path | None,
                resume: tuple[str, ...], checkpoint_signal: str, verify_timeout: float,
                metrics_port: str | None,
                max_time: float | None, until_idle: float | None, bootstrap: str | None,
                topic_prefix: str | None, fmt: str | None) -> None:
    """Carry out recommendations through the scheduler (Slurm): drain a node, requeue a job
    without its suspect nodes, signal it to checkpoint now, move it to another partition.
    A dry run by default. Safe: a per-node budget, a circuit breaker on the share of nodes
    drained, never touching a node drained with a reason fleetlog did not write, each action
    once (a restart repeats nothing), each verified afterwards. Every attempt lands in the
    store as an event (action.executed, action.skipped, action.failed).

    Example: fleetlog act --db fleet.duckdb --table

    Example: fleetlog act --db fleet.duckdb --execute --name-map names.toml

    Example: fleetlog act --db fleet.duckdb --execute --resume n00005

    Example: fleetlog act --follow --db act.duckdb --execute --metrics-port 9465
    """
    from fleetlog.act.actor import ActPolicy, NameMap, Outcome
    from fleetlog.act.slurm import SlurmBackend

    policy = ActPolicy.load(remediation_config, execute=execute,
                            checkpoint_signal=checkpoint_signal, verify_timeout_s=verify_timeout)
    names = NameMap.load(name_map)
    scheduler = SlurmBackend(str(slurm_conf) if slurm_conf else None)

    def say(outcome: Outcome) -> None:
        if sys.stderr.isatty():
            click.echo(f"{outcome.outcome}: {outcome.action} {outcome.target}: "
                       f"{outcome.command or outcome.why}", err=True)

    if not follow and (metrics_port is not None or max_time is not None
                       or until_idle is not None):
        raise click.UsageError("--metrics-port, --max-time and --until-idle go with --follow")
    if follow:
        if resume:
            raise click.UsageError("--resume acts once: use it without --follow")
        from fleetlog.act_follow import follow_act
        from fleetlog.ingest.kafka.settings import settings_for

        settings = settings_for(bootstrap, topic_prefix=topic_prefix)
        stats = follow_act(db, settings, scheduler, policy, names, topic_prefix=topic_prefix,
                           max_seconds=max_time, idle_exit_s=until_idle,
                           metrics_port=metrics_port, on_outcome=say)
        render(stats.summary(), fmt)
        return
    from fleetlog.act.run import act_on_store

    result = act_on_store(db, scheduler, policy, names, on_outcome=say, resume=resume)
    rows: list[dict[str, Any]] = [asdict(o) for o in result.outcomes]
    render(rows, fmt, columns=list(_COLUMNS) if fmt in ("table", "csv") else None,
           title=f"{'executed' if execute else 'dry run'}: {result.totals()}")


COMMANDS = [act_command]
