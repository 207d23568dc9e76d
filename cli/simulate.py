"""``fleetlog simulate`` and ``fleetlog scenarios``: the synthetic source (generators/)."""

from __future__ import annotations

from datetime import datetime, timedelta

import click

from fleetlog.cli.output import output_options, render
from fleetlog.cli.params import (
    MAX_DURATION_S,
    MAX_TIME,
    Duration,
    FiniteFloat,
    SinkUri,
    UtcTime,
    deprecated_alias,
    duration_text,
    topic_prefix_option,
)
from fleetlog.cli.progress import progress_reporter
from fleetlog.generators.config import DEFAULT_START, SHAPES, SimConfig
from fleetlog.generators.faults import SCENARIOS
from fleetlog.generators.run import simulate


@click.command("simulate")
@deprecated_alias("--hours", "--duration", "duration",
                  type=FiniteFloat(min=0, min_open=True, max=MAX_DURATION_S / 3600),
                  convert=lambda hours: hours * 3600, spell=duration_text)
@click.option("--nodes", type=click.IntRange(min=1), default=64, show_default=True,
              help="Nodes in the cluster (8 GPUs and 8 NICs each by default).")
@click.option("--duration", type=Duration(), default="1h", show_default=True,
              help="Simulated time to generate (e.g. 30m, 2h, 1d).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Same seed and parameters give the identical event stream.")
@click.option("--scenario", type=click.Choice(list(SCENARIOS)), default="llama3",
              show_default=True, help="What goes wrong (`fleetlog scenarios` lists them).")
@click.option("--shapes", type=click.Choice(SHAPES), default="template", show_default=True,
              help="How faults look: one template per fault (the detectors' reference) or "
              "wide (ramps, bursts, lags, magnitudes, missing precursors drawn per fault).")
@click.option("--fault-rate", type=FiniteFloat(min=0), default=1.0, show_default=True,
              help="Multiplier on the base hazard of random faults.")
@click.option("--base-hazard", type=FiniteFloat(min=0), default=5e-3, show_default=True,
              help="Job-interrupting failures per 8-GPU node-day (Llama 3: 3.8e-3).")
@click.option("--speed", type=FiniteFloat(min=0), default=0.0, show_default=True,
              help="0 = as fast as possible, 1 = wall clock, 60 = a simulated minute per second.")
@click.option("--to", "target", type=SinkUri(), required=True,
              help="Where the events go: kafka://HOST:PORT, duckdb:PATH, jsonl:DIR or null:.")
@click.option("--interval", type=Duration(min_s=1.0), default="10s", show_default=True,
              help="GPU and port scrape cadence (e.g. 10s, 1m).")
@click.option("--start", type=UtcTime(), default=DEFAULT_START.isoformat(), show_default=True,
              help="Simulated start time (ISO 8601 with zone, or relative: now-1d).")
@click.option("--gpus-per-node", type=click.IntRange(1, 16), default=8, show_default=True)
@click.option("--nodes-per-rack", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--racks-per-su", type=click.IntRange(min=1), default=8, show_default=True,
              help="Racks sharing one set of rail leaf switches (a scalable unit).")
@click.option("--spines", type=click.IntRange(min=1), default=None,
              help="Spine switches per region (default: one per SU, 2 to 8).")
@click.option("--regions", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--vclusters", type=click.IntRange(min=1), default=None,
              help="Virtual clusters (default: 2, or 1 for a one-rack cluster).")
@click.option("--restart-overhead", type=Duration(), default="10m", show_default=True,
              help="Time from a job failure to its restart.")
@click.option("--nccl-timeout", type=Duration(), default="10m", show_default=True,
              help="NCCL watchdog timeout of a hung collective.")
@topic_prefix_option
@output_options
def simulate_command(
    nodes: int, duration: float, seed: int, scenario: str, shapes: str, fault_rate: float,
    base_hazard: float,
    speed: float, target: tuple[str, str], interval: float, start: datetime,
    gpus_per_node: int, nodes_per_rack: int, racks_per_su: int, spines: int | None,
    regions: int, vclusters: int | None, restart_overhead: float, nccl_timeout: float,
    topic_prefix: str | None, fmt: str | None,
) -> None:
    """Generate the telemetry of a modeled GPU training cluster, with injected faults.

    Emits inventory, GPU and port samples, XIDs, host and job events, and the ground truth of
    every injected fault (topic `<prefix>.truth`, view `truth_faults`). Prints a summary.

    Example: fleetlog simulate --nodes 64 --duration 2h --seed 7 --scenario mixed
    --to duckdb:fleet.duckdb --table
    """
    if start + timedelta(seconds=duration) > MAX_TIME:
        raise click.BadParameter(f"the simulation would run past {MAX_TIME:%Y-%m-%d}, the end "
                                 "of the valid time range: give a shorter --duration or an "
                                 "earlier --start", param_hint="--duration")
    config = SimConfig(
        nodes=nodes, hours=duration / 3600, seed=seed, scenario=scenario, fault_rate=fault_rate,
        base_hazard=base_hazard, interval_s=interval, start=start, gpus_per_node=gpus_per_node,
        nodes_per_rack=nodes_per_rack, racks_per_su=racks_per_su, spines=spines,
        regions=regions, vclusters=vclusters, restart_overhead_s=restart_overhead,
        nccl_timeout_s=nccl_timeout, shapes=shapes,
    )
    with progress_reporter("simulating", unit="scrapes", total=config.ticks) as report:
        summary = simulate(config, target, speed=speed, topic_prefix=topic_prefix,
                           progress=lambda done, _total: report(done))
    render(summary, fmt)


@click.command("scenarios")
# One object per line: a list to grep or feed to jq line by line, and short enough to read.
@output_options(default="nl")
def scenarios_command(fmt: str | None) -> None:
    """List the simulation scenarios, one line each (name and what it injects).

    Example: fleetlog scenarios --table
    """
    rows = [{"scenario": s.name, "what": s.summary} for s in SCENARIOS.values()]
    render(rows, fmt)


COMMANDS = [simulate_command, scenarios_command]
