"""``fleetlog import`` and ``fleetlog scrape``: real telemetry in (files, live endpoints)."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

import click

from fleetlog.cli.errors import CommandFailed
from fleetlog.cli.output import output_options, render
from fleetlog.cli.params import (
    Duration,
    SinkUri,
    UtcTime,
    deprecated_alias,
    topic_prefix_option,
)
from fleetlog.ingest.readers import FORMAT_NAMES


@click.command("import")
@deprecated_alias("--db", "--to", "target", type=click.Path(path_type=Path),
                  convert=lambda path: ("duckdb", str(path)),
                  spell=lambda target: f"{target[0]}:{target[1]}")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--format", "input_format", type=click.Choice(("auto", *FORMAT_NAMES)),
              default="auto", show_default=True,
              help="Input format; auto tells it from the content.")
@click.option("--to", "target", type=SinkUri(("duckdb", "kafka")), default=None,
              help="Where the events go: duckdb:PATH (a store, created if missing) or "
              "kafka://HOST:PORT.")
@click.option("--node", default=None,
              help="Node name when the input does not carry one (dmesg, nvidia-smi, sysfs); for "
              "perfquery the device: a switch name or <node>/<hca>.")
@click.option("--tz", default=None,
              help="Zone of times written without one (sacct, nvidia-smi, dmesg -T, syslog): "
              "UTC, America/New_York, +02:00.")
@click.option("--time", "at", type=UtcTime(), default=None,
              help="Event time for inputs without one (/metrics, perfquery, sysfs): ISO 8601 "
              "with zone or relative (now-5m); default: the file's modification time.")
@click.option("--boot-time", type=UtcTime(), default=None,
              help="Boot time, for dmesg and /dev/kmsg stamps in seconds since boot.")
@click.option("--year", type=click.IntRange(1970, 9999), default=None,
              help="Year of syslog stamps that have none ('Feb 23 16:24:18').")
@click.option("--fields", default=None, metavar="A,B,...",
              help="Columns of a header-less file (the --query-gpu or sacct --format list).")
@topic_prefix_option
@output_options
def import_command(
    paths: tuple[Path, ...], input_format: str, target: tuple[str, str] | None,
    node: str | None, tz: str | None, at: datetime | None,
    boot_time: datetime | None, year: int | None, fields: str | None,
    topic_prefix: str | None, fmt: str | None,
) -> None:
    """Read real telemetry files (dcgm-exporter, nvidia-smi, kernel XID logs, sacct,
    perfquery, sysfs InfiniBand, fleetlog jsonl) and land or publish their events.

    Lines that cannot be read become dead letters (file, line, reason); importing the same
    file again lands nothing new.

    A PATH is a file, a folder (sysfs) or a pipe: /dev/stdin (cat f | fleetlog import ...
    /dev/stdin) or <(cmd). Device files and named pipes are refused (redirect a FIFO: /dev/stdin
    < FIFO). Limits: 1 GiB per input, 1 MiB per line (longer: a dead letter).

    Example: fleetlog import --to duckdb:fleet.duckdb --tz UTC --node gpu-node-1 dmesg.log
    sacct.txt
    """
    from fleetlog.ingest.readers.base import ReadOptions, parse_tz
    from fleetlog.ingest.readers.importer import import_paths

    opts = ReadOptions(
        node=node, time=at, tz=parse_tz(tz) if tz else None, boot_time=boot_time, year=year,
        fields=tuple(f.strip() for f in fields.split(",")) if fields else None,
    )
    if target is None:  # not click's required=True: the old --db may stand in for it
        raise click.UsageError("say where the events go: --to duckdb:PATH or --to "
                               "kafka://HOST:PORT")
    scheme, where = target
    summary = import_paths(paths, fmt=input_format, opts=opts,
                           db=Path(where) if scheme == "duckdb" else None,
                           to=target if scheme == "kafka" else None, topic_prefix=topic_prefix)
    render(summary, fmt)


@click.command("scrape")
@click.option("--dcgm", "dcgm_url", default=None, metavar="URL",
              help="dcgm-exporter endpoint, e.g. http://gpu-node-1:9400/metrics.")
@click.option("--nvidia-smi", "nvidia_smi", is_flag=True,
              help="Also run the local nvidia-smi binary each poll.")
@click.option("--interval", type=Duration(), default="10s", show_default=True,
              help="Time between polls (e.g. 500ms, 10s, 1m).")
@click.option("--count", type=click.IntRange(min=1), default=None,
              help="Stop after this many polls (default: run until Ctrl-C).")
@click.option("--to", "target", type=SinkUri(("kafka", "duckdb")), required=True,
              help="Where the events go: kafka://HOST:PORT or duckdb:PATH.")
@click.option("--node", default=None,
              help="Node name (default: the Hostname label; for --nvidia-smi, this host).")
@topic_prefix_option
@output_options
def scrape_command(
    dcgm_url: str | None, nvidia_smi: bool, interval: float, count: int | None,
    target: tuple[str, str], node: str | None, topic_prefix: str | None, fmt: str | None,
) -> None:
    """Poll a live dcgm-exporter endpoint (and/or nvidia-smi) and publish each scrape.

    It prints its summary and exits 1 when no poll succeeded (every source failed every time),
    so a script or a service manager sees a collector that collects nothing.

    Example: fleetlog scrape --dcgm http://gpu-node-1:9400/metrics --interval 10s
    --to kafka://127.0.0.1:9092
    """
    from fleetlog.ingest.readers.scrape import scrape

    summary = scrape(dcgm_url=dcgm_url, nvidia_smi=nvidia_smi, interval_s=interval, count=count,
                     to=target, node=node, topic_prefix=topic_prefix,
                     progress=_say if sys.stderr.isatty() else None)
    render(summary, fmt)
    if summary["ok_polls"] == 0:
        polls = f"{summary['polls']} poll" + ("" if summary["polls"] == 1 else "s")
        raise CommandFailed(f"no poll succeeded ({polls}); the last error: "
                            f"{summary['last_error']}")


def _say(line: str) -> None:
    click.echo(line, err=True)


COMMANDS = [import_command, scrape_command]
