"""Options shared by several commands, defined once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

db_option = click.option(
    "--db", "db", multiple=True, type=click.Path(path_type=Path), required=True,
    help="DuckDB store: a file, several --db files, or a folder of ingester shards.",
)

bootstrap_option = click.option(
    "--bootstrap", default=None, metavar="HOST:PORT",
    help="Kafka bootstrap servers (default: $FLEETLOG_KAFKA_BOOTSTRAP, else the local broker "
    "from `fleetlog kafka up`, else 127.0.0.1:9092).",
)

topic_prefix_option = click.option(
    "--topic-prefix", default=None, envvar="FLEETLOG_TOPIC_PREFIX", show_envvar=True,
    help="Prefix of the fleetlog topics (default: fleetlog).",
)

kafka_dir_option = click.option(
    "--data-dir", type=click.Path(path_type=Path), default=None, envvar="FLEETLOG_KAFKA_DIR",
    show_envvar=True, help="Where the local broker keeps its data, config and log "
    "(default: .fleetlog/kafka).",
)
