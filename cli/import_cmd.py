"""``fleetlog import`` and ``fleetlog scrape``: real telemetry in (files, live endpoints)."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from fleetlog.cli.errors import CommandFailed
from fleetlog.cli.output import output_options, render
from fleetlog.cli.params import SinkUri, UtcTime, topic_prefix_option
from fleetlog.ingest.readers import FORMAT_NAMES
from fleetlog.ingest.readers.errors import ReaderError


class Interval(click.ParamType[float]):
    """``10s``, ``500ms``, ``1m`` or a number of seconds."""

    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value
        from fleetlog.ingest.readers.scrape import parse_interval

        try:
            return parse_interval(str(value))
        except ReaderError as exc:
            self.fail(str(exc), param, ctx)


@click.command("import")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--format", "input_format", type=click.Choice(("auto", *FORMAT_NAMES)),
              default="auto", show_default=True,
              help="Input format; auto tells it from the content.")
@click.option("--db", type=click.Path(path_type=Path), default=None,
              help="Land the events in this DuckDB store (created if missing).")
@click.option("--to", "target", type=SinkUri(("kafka",)), default=None,
              help="Publish to Kafka instead: kafka://HOST:PORT.")
@click.option("--node", default=None,
              help="Node name when the input does not carry one (dmesg, nvidia-smi, sysfs); for "
              "perfquery the device: a switch name or <node>/<hca>.")
@click.option("--tz", default=None,
              help="Zone of times written without one (sacct, nvidia-smi, dmesg -T, syslog): "
              "UTC, America/New_York, +02:00.")
@click.option("--time", "at", type=UtcTime(), default=None,
              help="Event time for inputs without one (/metrics, perfquery, sysfs); default: "
              "the file's modification time.")
@click.option("--boot-time", type=UtcTime(), default=None,
              help="Boot time, for dmesg and /dev/kmsg stamps in seconds since boot.")
@click.option("--year", type=click.IntRange(1970, 9999), default=None,
              help="Year of syslog stamps that have none ('Feb 23 16:24:18').")
@click.option("--fields", default=None, metavar="A,B,...",
              help="Columns of a header-less file (the --query-gpu or sacct --format list).")
@topic_prefix_option
@output_options
def import_command(
    paths: tuple[Path, ...], input_format: str, db: Path | None,
    target: tuple[str, str] | None, node: str | None, tz: str | None, at: datetime | None,
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

    Example: fleetlog import --db fleet.duckdb --tz UTC --node gpu-node-1 dmesg.log sacct.txt
    """
    from fleetlog.ingest.readers.base import ReadOptions, parse_tz
    from fleetlog.ingest.readers.importer import import_paths

    opts = ReadOptions(
        node=node, time=at, tz=parse_tz(tz) if tz else None, boot_time=boot_time, year=year,
        fields=tuple(f.strip() for f in fields.split(",")) if fields else None,
    )
    summary = import_paths(paths, fmt=input_format, opts=opts, db=db, to=target,
                           topic_prefix=topic_prefix)
    render(summary, fmt)


@click.command("scrape")
@click.option("--dcgm", "dcgm_url", default=None, metavar="URL",
              help="dcgm-exporter endpoint, e.g. http://gpu-node-1:9400/metrics.")
@click.option("--nvidia-smi", "nvidia_smi", is_flag=True,
              help="Also run the local nvidia-smi binary each poll.")
@click.option("--interval", type=Interval(), default="10s", show_default=True,
              help="Time between polls (10s, 500ms, 1m).")
@click.option("--count", type=click.IntRange(min=1), default=None,
              help="Stop after this many polls (default: run until Ctrl-C).")
@click.option("--to", "target", type=SinkUri(("kafka", "duckdb")), required=True,
              help="kafka://HOST:PORT or duckdb:PATH.")
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
