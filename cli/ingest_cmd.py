"""``fleetlog ingest``: Kafka (or ``jsonl:`` files) into a DuckDB store, exactly once in effect."""

from __future__ import annotations

from pathlib import Path

import click

from fleetlog.cli.live import LiveIngest
from fleetlog.cli.output import output_options, render
from fleetlog.cli.params import (
    Duration,
    bootstrap_option,
    metrics_port_option,
    topic_prefix_option,
)
from fleetlog.ingest import contract as c
from fleetlog.ingest.ingester import (
    INGEST_MEMORY_LIMIT,
    KafkaIngest,
    default_group,
    default_topics,
    ingest_kafka,
)
from fleetlog.ingest.jsonl import ingest_jsonl
from fleetlog.ingest.kafka.consumer import ConsumerTuning
from fleetlog.ingest.kafka.settings import settings_for
from fleetlog.ingest.metrics import IngestMetrics
from fleetlog.ingest.pipeline import DEFAULT_BATCH_EVENTS
from fleetlog.ingest.store.database import valid_memory_limit


def _topics(values: tuple[str, ...], prefix: str) -> list[str]:
    """Families (``gpu``) or their topics (``<prefix>.gpu``) -> topics. Anything else is
    refused: subscribing to a name the broker does not know would create that topic."""
    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
    if not names:
        return default_topics(prefix)
    known = {family: c.topic_name(family, prefix) for family in c.TOPIC_FAMILIES}
    topics = set(known.values())
    for name in names:
        if name not in known and name not in topics:
            raise click.BadParameter(
                f"{name[:80]!r} is not a fleetlog topic family: use "
                f"{', '.join(c.TOPIC_FAMILIES)} (or {prefix}.<family>)", param_hint="--topics")
    return list(dict.fromkeys(known.get(name, name) for name in names))


def _check_size(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not valid_memory_limit(value):
        raise click.BadParameter(f"{value!r} is not a size like 512MB or 2GB")
    return value.strip()


@click.command("ingest")
@bootstrap_option
@topic_prefix_option
@click.option("--db", type=click.Path(path_type=Path), required=True,
              help="This ingester's DuckDB file (created if missing). Ingesters of one group "
              "keep their files in one folder.")
@click.option("--topics", multiple=True, metavar="TOPIC[,TOPIC]",
              help="Topics or families (gpu, jobs, ...) to consume [default: every fleetlog "
              "family except dlq].")
@click.option("--group", default=None,
              help="Kafka consumer group; ingesters in one group share the partitions "
              "[default: <prefix>-ingest].")
@click.option("--follow", "mode", flag_value="follow", default=True,
              help="Run until stopped (SIGINT/SIGTERM) [default].")
@click.option("--until-idle", type=Duration(zero="stop as soon as caught up"), default=None,
              help="Stop once caught up and the topics have been quiet this long (e.g. 30s, "
              "5m; 0: as soon as caught up).")
@click.option("--from", "source", default=None, metavar="jsonl:DIR",
              help="Land the files of `fleetlog simulate --to jsonl:DIR` instead of Kafka.")
@click.option("--batch-events", type=click.IntRange(min=1), default=DEFAULT_BATCH_EVENTS,
              show_default=True, help="Events per DuckDB transaction (at most; bigger ones "
              "land faster and smaller on disk, see docs/ingest.md#batch-size).")
@click.option("--broker-timeout", type=Duration(min_s=1), default="1m", show_default=True,
              help="Stop with an error when Kafka is gone this long.")
@click.option("--session-timeout", type=Duration(min_s=6, max_s=1800), default="10s",
              show_default=True,
              help="How soon a dead ingester's partitions move to the others (6s to 30m: the "
              "broker's default bounds).")
@click.option("--in-process/--writer-process", default=True, show_default=True,
              help="Decode and write on a thread of this process, or in a second process with "
              "its own GIL (more CPU per event for the hand-over; see docs/ingest.md).")
@click.option("--snapshot", type=click.Path(path_type=Path), default=None,
              help="Keep a read-only copy of the store here for reports, SQL and analysis "
              "(a running ingester's own file cannot be opened by anyone else).")
@click.option("--snapshot-every", "snapshot_every", type=Duration(), default="5m",
              show_default=True, help="How often to refresh --snapshot (after a commit).")
@click.option("--memory-limit", default=INGEST_MEMORY_LIMIT, show_default=True, metavar="SIZE",
              callback=_check_size,
              help="Cap on DuckDB's buffer pool in the writer (it would otherwise keep what it "
              "wrote, up to 80% of RAM).")
@metrics_port_option
# A table: an operator watches ingestion run (live on a terminal) and reads its summary;
# scripts ask --json, which adds the per-partition detail.
@output_options(default="table")
def ingest_command(
    bootstrap: str | None, topic_prefix: str | None, db: Path, topics: tuple[str, ...],
    group: str | None, mode: str, until_idle: float | None, source: str | None,
    batch_events: int, broker_timeout: float, session_timeout: float, in_process: bool,
    snapshot: Path | None, snapshot_every: float, memory_limit: str, metrics_port: str | None,
    fmt: str | None,
) -> None:
    """Land the fleetlog topics in a DuckDB store: no loss, no duplicates, through crashes.

    Each batch's rows, dead letters and Kafka offsets commit in one DuckDB transaction; on start
    (and on every rebalance) each partition resumes at its stored offset. Undecodable messages
    become dead letters and ingestion goes on. On a terminal it shows rate, lag and dead
    letters live; it ends with a summary (--json for scripts).

    Example: fleetlog ingest --bootstrap 127.0.0.1:9092 --db fleet.duckdb --until-idle 5s

    Example: fleetlog ingest --from jsonl:out/ --db fleet.duckdb --json
    """
    explicit = click.get_current_context().get_parameter_source("mode")
    if until_idle is not None and explicit is click.core.ParameterSource.COMMANDLINE:
        raise click.UsageError("--follow and --until-idle exclude each other: give one")
    if metrics_port is not None and source is not None:
        raise click.UsageError("--metrics-port serves /metrics while following Kafka: drop "
                               "--from, or --metrics-port")
    with LiveIngest() as live, IngestMetrics.serving(metrics_port) as metrics:
        if metrics.url is not None:
            click.echo(f"fleetlog ingest: serving {metrics.url}", err=True)
        if source is not None:
            kind, _, folder = source.partition(":")
            if kind != "jsonl" or not folder:
                raise click.BadParameter("expected jsonl:DIR", param_hint="--from")
            stats = ingest_jsonl(Path(folder), db, batch_events=batch_events,
                                 progress=live.update, memory_limit=memory_limit)
        else:
            settings = settings_for(bootstrap, topic_prefix=topic_prefix)
            prefix = settings.topic_prefix
            job = KafkaIngest(
                db=db, topics=_topics(topics, prefix), group=group or default_group(prefix),
                until_idle_s=until_idle, batch_events=batch_events,
                broker_timeout_s=broker_timeout,
                tuning=ConsumerTuning(session_timeout_ms=int(session_timeout * 1000)),
                worker_process=not in_process,
                snapshot=snapshot, snapshot_every_s=snapshot_every,
                memory_limit=memory_limit,
            )
            stats = ingest_kafka(job, settings, progress=metrics.also(live.update))
    render(stats.to_json(detail=fmt in ("json", "nl")), fmt)


COMMANDS = [ingest_command]
