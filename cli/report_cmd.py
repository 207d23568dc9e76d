"""``fleetlog report``: batch reports for a time window, once or on a schedule."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click

from fleetlog.analysis.report import FORMATS, run_every, write_report
from fleetlog.cli.output import output_options, render
from fleetlog.cli.params import Duration, db_option, until_option


@click.command("report")
@db_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for the report files (named after the window; a symbolic link at "
              "a file's name is refused).")
@click.option("--window", "window_s", type=Duration(), default="24h", show_default=True,
              help="How far back from the end of the window (e.g. 1h, 24h, 7d).")
@until_option
@click.option("--format", "formats", default="html,md,json", show_default=True,
              help="Comma-separated: html, md, json.")
@click.option("--every", "every_s", type=Duration(), default=None,
              help="Repeat on this schedule (e.g. 1h) until SIGTERM/SIGINT.")
@output_options(help_texts={"json": "Output JSON (the default; one line per report with --every)."})
def report_command(
    db: tuple[Path, ...], out: Path, window_s: float, until: datetime | None, formats: str,
    every_s: float | None, fmt: str | None,
) -> None:
    """Write a self-contained HTML report (charts embedded), Markdown and JSON for a window.

    The window ends at --until, or at the newest event in the store; reporting the same window
    again rewrites the same files.

    Example: fleetlog report --db fleet.duckdb --out reports --window 24h
    """
    chosen = [f.strip() for f in formats.split(",") if f.strip()]
    bad = [f for f in chosen if f not in FORMATS]
    if bad:
        raise click.BadParameter(f"unknown format {', '.join(bad)}; use html, md, json",
                                 param_hint="--format")

    def make() -> dict[str, object]:
        return write_report(db, out, window_s=window_s, until=until, formats=chosen)

    if every_s is None:
        render(make(), fmt)
        return
    run_every(every_s, make, lambda result: render(result, "nl" if fmt == "json" else fmt))


COMMANDS = [report_command]
