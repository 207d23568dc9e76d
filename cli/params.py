"""Options and parameter types shared by several commands, defined once.

Every bad option value is refused here, by a parameter type raising ``click.BadParameter``: one
line, exit code 2, before the command runs. Numbers are finite (``nan`` and ``inf`` are refused)
and in their range; times lie in the contract's valid range (1970..2200); durations are at most
that range's span.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Final, TypeVar

import click

from fleetlog.ingest.contract.time_range import MAX_TIME_US, MIN_TIME_US, RANGE_TEXT

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

metrics_port_option = click.option(
    "--metrics-port", default=None, metavar="[HOST:]PORT",
    help="Serve Prometheus /metrics here while following (PORT alone: every interface). "
    "See docs/alerts-and-metrics.md.",
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


class UtcTime(click.ParamType[datetime]):
    """An ISO 8601 time with a zone (``2026-01-05T06:00:00Z``); naive times are refused."""

    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        text = str(value).strip()
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            self.fail(f"{text!r} is not an ISO 8601 time (e.g. 2026-01-05T06:00:00Z)", param,
                      ctx)
        if parsed.tzinfo is None:
            self.fail(f"{text!r} has no time zone: add one, e.g. {text}Z for UTC", param, ctx)
        if not MIN_TIME <= parsed <= MAX_TIME:
            self.fail(f"{text!r} is outside the valid time range {RANGE_TEXT}", param, ctx)
        return parsed.astimezone(UTC)


MIN_TIME: Final = datetime.fromtimestamp(MIN_TIME_US / 1e6, UTC)
MAX_TIME: Final = datetime.fromtimestamp(MAX_TIME_US / 1e6, UTC)
# The longest duration any option takes: the span of the valid time range (230 years).
MAX_DURATION_S: Final = (MAX_TIME_US - MIN_TIME_US) / 1e6


class FiniteFloat(click.FloatRange):
    """A finite number (``nan`` and ``inf`` refused, which ``click.FloatRange`` lets through:
    comparisons with nan are false) in its range."""

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return super().convert(number, param, ctx)


since_option = click.option("--since", type=UtcTime(), default=None,
                            help="Start of the time range (ISO 8601 with zone).")
until_option = click.option("--until", type=UtcTime(), default=None,
                            help="End of the time range (ISO 8601 with zone).")


class SinkUri(click.ParamType[tuple[str, str]]):
    """``kafka://HOST:PORT``, ``duckdb:PATH``, ``jsonl:DIR`` or ``null:``."""

    name = "URI"

    def __init__(self, schemes: tuple[str, ...] = ("kafka", "duckdb", "jsonl", "null")) -> None:
        self.schemes = schemes

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> tuple[str, str]:
        if isinstance(value, tuple):
            return value
        text = str(value)
        scheme, sep, rest = text.partition(":")
        if not sep or scheme not in self.schemes:
            self.fail(f"{text!r}: expected one of "
                      + ", ".join(_SINK_EXAMPLES[s] for s in self.schemes), param, ctx)
        rest = rest.removeprefix("//")
        if scheme != "null" and not rest:
            self.fail(f"{text!r} names no {'broker' if scheme == 'kafka' else 'path'}", param,
                      ctx)
        return scheme, rest


_SINK_EXAMPLES = {"kafka": "kafka://HOST:PORT", "duckdb": "duckdb:PATH", "jsonl": "jsonl:DIR",
                  "null": "null:"}


class Duration(click.ParamType[float]):
    """``90s``, ``10m``, ``1h``, ``7d`` (or plain seconds) -> seconds: finite, positive, at least
    ``min_s`` and at most ``max_s`` (the span of the valid time range unless told)."""

    name = "DURATION"
    _UNITS: ClassVar[dict[str, float]] = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

    def __init__(self, min_s: float = 0.0, max_s: float = MAX_DURATION_S) -> None:
        self.min_s, self.max_s = min_s, max_s

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds = float(value)
        else:
            text = str(value).strip().lower()
            number, unit = (text[:-1], text[-1]) if text[-1:] in self._UNITS else (text, "s")
            try:
                seconds = float(number) * self._UNITS[unit]
            except ValueError:
                self.fail(f"{value!r} is not a duration (e.g. 30s, 10m, 1h, 7d)", param, ctx)
        if not math.isfinite(seconds):
            self.fail(f"{value!r} is not a finite duration", param, ctx)
        if seconds <= 0:
            self.fail(f"{value!r} must be positive", param, ctx)
        if seconds < self.min_s:
            self.fail(f"{value!r} must be at least {self.min_s:g}s", param, ctx)
        if seconds > self.max_s:
            self.fail(f"{value!r} is longer than {_span(self.max_s)}", param, ctx)
        return seconds


def _span(seconds: float) -> str:
    if seconds == MAX_DURATION_S:
        return f"the valid time range {RANGE_TEXT} ({seconds / 86400 / 365.25:.0f} years)"
    return f"{seconds:g}s"
