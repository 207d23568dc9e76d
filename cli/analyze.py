"""``fleetlog analyze``, ``incidents``, ``explain`` and ``eval``: failure analysis commands."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import click

from fleetlog.cli.output import output_options, render
from fleetlog.cli.params import (
    Duration,
    bootstrap_option,
    db_option,
    deprecated_alias,
    duration_text,
    metrics_port_option,
    since_option,
    topic_prefix_option,
    until_option,
)
from fleetlog.ingest.contract import to_us

_INCIDENT_COLUMNS = ("incident_id", "category", "root_entity", "confidence", "start_ts",
                     "detected_ts", "signals")


def _us(value: datetime | None) -> int | None:
    return None if value is None else to_us(value)


def _say(text: str) -> None:
    import sys

    if sys.stderr.isatty():
        click.echo(text, err=True)


@click.command("analyze")
@deprecated_alias("--max-seconds", "--max-time", "max_time", type=Duration(), spell=duration_text)
@deprecated_alias("--idle-exit", "--until-idle", "until_idle", type=Duration(),
                  spell=duration_text)
@db_option
@since_option
@until_option
@click.option("--write/--no-write", default=True, show_default=True,
              help="Store the incidents in the store (needs a single store file).")
@click.option("--publish", is_flag=True,
              help="Also publish the incidents on <prefix>.analysis (Kafka).")
@click.option("--follow", is_flag=True,
              help="Stream: consume the pipeline's topics into --db (its own store, not an "
              "ingester's) and analyze as events land.")
@click.option("--every", type=Duration(), default="5s", show_default=True,
              help="--follow: how often to re-analyze (e.g. 5s).")
@click.option("--lookback", type=Duration(), default="2h", show_default=True,
              help="--follow: how much recent data each analysis reads (e.g. 2h).")
@click.option("--max-time", type=Duration(), default=None,
              help="--follow: stop after this long (e.g. 10m; default: run until Ctrl-C).")
@click.option("--until-idle", type=Duration(), default=None,
              help="--follow: stop once nothing new arrived for this long (e.g. 30s).")
@click.option("--alertmanager", metavar="URL", default=None,
              help="Send each incident to this Alertmanager (v2 API, e.g. "
              "http://127.0.0.1:9093): one alert per incident, re-sent while open (--follow), "
              "resolved when it ends. See docs/alerts-and-metrics.md.")
@click.option("--remediation-config", type=click.Path(path_type=Path, exists=True),
              default=None, help="--follow: the remediation thresholds (TOML, as `fleetlog "
              "recommend --remediation-config`) of the component actions issued as incidents "
              "are found.")
@click.option("--learned", is_flag=True,
              help="Also run the learned detector (GPUs, nodes and ports that depart from their "
              "peers, scored by an isolation forest); off by default: docs/analysis.md"
              "#learned-detector.")
@metrics_port_option
@bootstrap_option
@topic_prefix_option
@output_options
def analyze_command(
    db: tuple[Path, ...], since: datetime | None, until: datetime | None, write: bool,
    publish: bool, follow: bool, every: float, lookback: float, max_time: float | None,
    until_idle: float | None, alertmanager: str | None, remediation_config: Path | None,
    learned: bool, metrics_port: str | None, bootstrap: str | None, topic_prefix: str | None,
    fmt: str | None,
) -> None:
    """Find what failed, when, where and why: detect anomalies, group them into incidents and
    rank root causes. Reads the store only (never truth_faults); incidents are stored in the
    `incidents` view (re-running adds no duplicates) and, with --publish, sent to Kafka. With
    --follow, the component actions for each new incident (drain, reset...) are issued as it is
    found, stored and published where `fleetlog act --follow` takes them; the job actions come
    from `fleetlog recommend`.

    Example: fleetlog analyze --db fleet.duckdb --table
    """
    from fleetlog.ingest.kafka.settings import settings_for

    if remediation_config is not None and not follow:
        raise click.UsageError("--remediation-config goes with --follow (batch: `fleetlog "
                               "recommend --remediation-config`)")
    if metrics_port is not None and not follow:
        raise click.UsageError("--metrics-port serves /metrics while --follow runs: add --follow")
    if not follow and (max_time is not None or until_idle is not None):
        raise click.UsageError("--max-time and --until-idle end a --follow: add --follow")
    if alertmanager is not None and not write:
        raise click.UsageError("--alertmanager needs the incidents stored (their severity is "
                               "the stored incident's): drop --no-write")
    if learned and follow:
        raise click.UsageError("--learned runs in batch analysis only (not with --follow)")
    if follow:
        from fleetlog.analysis.remediation import RemediationConfig
        from fleetlog.follow import follow as run_follow

        if len(db) != 1:
            raise click.UsageError("--follow needs exactly one --db (its own store file)")
        settings = settings_for(bootstrap, topic_prefix=topic_prefix)
        stats = run_follow(
            db[0], settings, topic_prefix=topic_prefix, every_s=every, lookback_s=lookback,
            max_seconds=max_time, idle_exit_s=until_idle, publish=True,
            on_incident=lambda row: _say(
                f"incident {row['incident_id']}: {row['severity']} {row['category']} on "
                f"{row['root_entity']} (event lag {row['event_lag_s']} s"
                + ("" if row["wall_lag_s"] is None else f", wall lag {row['wall_lag_s']} s")
                + ")"),
            metrics_address=metrics_port, alertmanager=alertmanager,
            remediation=RemediationConfig.load(remediation_config) if remediation_config
            else None,
            on_notice=lambda text: click.echo(f"fleetlog analyze: {text}", err=True),
        )
        render(stats.summary(), fmt)
        return
    from fleetlog.analysis.detectors import DETECTORS
    from fleetlog.analysis.pipeline import run_analysis
    from fleetlog.cli.progress import progress_reporter

    publish_to = settings_for(bootstrap, topic_prefix=topic_prefix) if publish else None
    sent: list[int] = []
    on_result = None
    if alertmanager is not None:
        from fleetlog.act.alerts import batch_sender

        on_result = batch_sender(alertmanager, sent)
    with progress_reporter("analyzing", unit="detectors", total=len(DETECTORS) + learned) as report:
        result = run_analysis(list(db), since_us=_us(since), until_us=_us(until), write=write,
                              publish_to=publish_to, topic_prefix=topic_prefix, on_step=report,
                              on_result=on_result, optional=("learned",) if learned else ())
    if alertmanager is not None:
        result["alerts_sent"] = sum(sent)
    if fmt in ("table", "csv", "nl"):
        rows = [{**row, "signals": ", ".join(row["signals"])} for row in result["opened"]]
        render(rows, fmt, columns=_INCIDENT_COLUMNS, title=(
            f"{result['incidents']} incidents ({result['stored']} new in the store)"))
    else:
        render(result, fmt)


@click.command("incidents")
@db_option
@output_options
def incidents_command(db: tuple[Path, ...], fmt: str | None) -> None:
    """List the stored incidents (the `incidents` view), oldest first.

    Example: fleetlog incidents --db fleet.duckdb --table
    """
    from fleetlog.analysis.incidents import list_incidents
    from fleetlog.ingest.store import open_union

    con = open_union(list(db))
    try:
        rows = list_incidents(con)
    finally:
        con.close()
    columns = ["incident_id", "category", "root_entity", "confidence", "start_ts", "end_ts",
               "evidence_events"]
    if fmt not in ("table", "csv"):
        columns.insert(6, "candidates")
    render(rows, fmt, columns=columns, title=f"{len(rows)} incidents")


@click.command("explain")
@db_option
@click.argument("incident_id")
# Words: an explanation is read by a person; --json gives its parts to scripts.
@output_options(default="table",
                help_texts={"table": "Output the explanation in words, for people."})
def explain_command(db: tuple[Path, ...], incident_id: str, fmt: str | None) -> None:
    """Explain one incident: its evidence timeline in words, the other candidates, what to do.

    Example: fleetlog explain --db fleet.duckdb inc-0123456789abcdef
    """
    from fleetlog.analysis.explain import explain, render_text
    from fleetlog.ingest.store import open_union

    con = open_union(list(db))
    try:
        explained = explain(con, incident_id)
    finally:
        con.close()
    if fmt == "table":
        click.echo(render_text(explained))
    else:
        render(explained, fmt)


@click.command("eval")
@db_option
@since_option
@until_option
@click.option("--separately", is_flag=True,
              help="Each --db file is its own run (e.g. several seeds); figures are pooled. "
              "Without it, the files are shards of one store.")
@click.option("--learned", is_flag=True,
              help="Also run the learned detector (GPUs, nodes and ports that depart from their "
              "peers, scored by an isolation forest); off by default: docs/analysis.md"
              "#learned-detector.")
@output_options
def eval_command(
    db: tuple[Path, ...], since: datetime | None, until: datetime | None, separately: bool,
    learned: bool, fmt: str | None,
) -> None:
    """Score the analysis against the ground truth (truth_faults): precision, recall, F1, time
    to detect, root-cause AC@1/AC@3/Avg@3 per category, confusion matrix, false alarms per
    1,000 node-hours. The analysis itself never reads the truth.

    Example: fleetlog eval --db run-s1.duckdb --db run-s2.duckdb --separately --table
    """
    from fleetlog.analysis.evaluate import evaluate_stores

    groups: list[list[str]] = ([[str(p)] for p in db] if separately else [[str(p) for p in db]])
    report = evaluate_stores(groups, _us(since), _us(until),
                             optional=("learned",) if learned else ())
    if fmt == "table":
        render(_eval_rows(report), fmt, title=(
            f"F1 {report['f1']}  precision {report['precision']}  recall {report['recall']}  "
            f"false alarms/1000 node-h {report['false_alarms_per_1000_node_hours']}"))
    else:
        render(report, fmt)


def _eval_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = [{"category": cat, **scores} for cat, scores in report["by_category"].items()]
    # Fail-slow kinds (by_kind keys that are no category) get a row each, in the same columns.
    columns = list(report["overall"])
    rows += [{"category": f"kind {kind}", **{k: scores.get(k) for k in columns}}
             for kind, scores in report.get("by_kind", {}).items()
             if kind not in report["by_category"]]
    rows.append({"category": "overall", **report["overall"]})
    return rows


COMMANDS = [analyze_command, incidents_command, explain_command, eval_command]
