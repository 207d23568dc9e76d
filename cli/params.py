"""Options and parameter types shared by several commands, defined once.

Every bad option value is refused here, by a parameter type raising ``click.BadParameter``: one
line, exit code 2, before the command runs. Numbers are finite (``nan`` and ``inf`` are refused)
and in their range; times lie in the contract's valid range (1970..2200); durations are at most
that range's span.

The grammar these types implement (how a broker, a store, a target, a duration and a time are
written, and which old spellings still work) is docs/cli.md.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, TypeVar

import click

from fleetlog.ingest.contract.time_range import MAX_TIME_US, MIN_TIME_US, RANGE_TEXT

F = TypeVar("F", bound=Callable[..., Any])

db_option = click.option(
    "--db", "db", multiple=True, type=click.Path(path_type=Path), required=True,
    help="DuckDB store: a file, several --db files, or a folder of ingester shards.",
)

bootstrap_option = click.option(
    "--bootstrap", default=None, metavar="HOST:PORT",
    help="The Kafka broker (HOST:PORT or kafka://HOST:PORT; default: "
    "$FLEETLOG_KAFKA_BOOTSTRAP, else the local broker from `fleetlog kafka up`, else "
    "127.0.0.1:9092).",
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
    """A time: ISO 8601 with a zone (``2026-01-05T06:00:00Z``), or relative to now (``now``,
    ``now-2h``, ``-15m``, ``now+1d``: a ``Duration`` after the sign). Naive times are refused:
    fleetlog never guesses a zone. Every relative time of one command counts from the same now."""

    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        text = str(value).strip()
        relative = _RELATIVE_TIME.fullmatch(text.lower())
        if relative is not None:
            parsed = _now(ctx)
            if relative["offset"]:
                seconds = parse_duration(relative["offset"])
                if seconds is None or not 0 <= seconds <= MAX_DURATION_S:
                    self.fail(f"{text!r}: after the sign comes a duration (e.g. now-15m, -2h, "
                              "now-1d)", param, ctx)
                parsed += timedelta(seconds=seconds if relative["sign"] == "+" else -seconds)
        else:
            try:
                parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
            except ValueError:
                self.fail(f"{text!r} is not a time: ISO 8601 with a zone (e.g. "
                          "2026-01-05T06:00:00Z) or relative to now (now, now-2h, -15m)", param,
                          ctx)
        if parsed.tzinfo is None:
            self.fail(f"{text!r} has no time zone: add one, e.g. {text}Z for UTC", param, ctx)
        if not MIN_TIME <= parsed <= MAX_TIME:
            self.fail(f"{text!r} is outside the valid time range {RANGE_TEXT}", param, ctx)
        return parsed.astimezone(UTC)


# ``now``, ``now-2h``, ``now+1d``, ``-15m`` (the ``now`` may be left out before a sign).
_RELATIVE_TIME: Final = re.compile(r"now|(?:now)?\s*(?P<sign>[+-])\s*(?P<offset>\S.*)")


def _now(ctx: click.Context | None) -> datetime:
    """The command's one "now": ``--since -1h --until now`` spans exactly an hour."""
    if ctx is None:
        return datetime.now(UTC)
    now: datetime = ctx.meta.setdefault("fleetlog.now", datetime.now(UTC))
    return now


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
                            help="Start of the time range (ISO 8601 with zone, or relative: "
                            "-15m, now-2h).")
until_option = click.option("--until", type=UtcTime(), default=None,
                            help="End of the time range (ISO 8601 with zone, or relative: "
                            "now, now-1h).")


class SinkUri(click.ParamType[tuple[str, str]]):
    """``kafka://HOST:PORT``, ``duckdb:PATH``, ``jsonl:DIR`` or ``null:``. ``kafka:`` alone is
    the default broker, found as ``--bootstrap`` finds it when not given (an empty address)."""

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
        if scheme not in ("null", "kafka") and not rest:
            self.fail(f"{text!r} names no path", param, ctx)
        return scheme, rest


_SINK_EXAMPLES = {"kafka": "kafka://HOST:PORT", "duckdb": "duckdb:PATH", "jsonl": "jsonl:DIR",
                  "null": "null:"}


class Duration(click.ParamType[float]):
    """``500ms``, ``90s``, ``10m``, ``2h``, ``7d``, ``1h30m`` (or a bare number of seconds) ->
    seconds: finite, positive (or zero where ``zero`` says what 0 means), at least ``min_s`` and
    at most ``max_s`` (the span of the valid time range unless told). Give an option's default
    as text with its unit (``default="5m"``) so that help shows it that way."""

    name = "DURATION"

    def __init__(self, min_s: float = 0.0, max_s: float = MAX_DURATION_S,
                 zero: str | None = None) -> None:
        self.min_s, self.max_s, self.zero = min_s, max_s, zero

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds: float | None = float(value)
        else:
            seconds = parse_duration(str(value))
        if seconds is None:
            self.fail(f"{value!r} is not a duration (e.g. 500ms, 30s, 10m, 2h, 7d; a bare "
                      "number is seconds)", param, ctx)
        if not math.isfinite(seconds):
            self.fail(f"{value!r} is not a finite duration", param, ctx)
        if seconds == 0 and self.zero is not None:
            return 0.0
        if seconds <= 0:
            self.fail(f"{value!r} must be positive", param, ctx)
        if seconds < self.min_s:
            self.fail(f"{value!r} must be at least {duration_text(self.min_s)}", param, ctx)
        if seconds > self.max_s:
            self.fail(f"{value!r} is longer than {_span(self.max_s)}", param, ctx)
        return seconds


DURATION_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART: Final = re.compile(r"((?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?)(ms|s|m|h|d)")


def parse_duration(text: str) -> float | None:
    """``500ms``, ``5m``, ``1h30m``, ``2.5`` (seconds, as a bare number always was) -> seconds,
    or None when it is no duration. Signs and range are the caller's to check."""
    compact = text.strip().lower().replace(" ", "")
    try:
        return float(compact)
    except ValueError:
        pass
    if compact[:1] == "-":  # said as negative, so the caller can say it must be positive
        magnitude = parse_duration(compact[1:])
        return None if magnitude is None else -magnitude
    seconds, end = 0.0, 0
    for part in _DURATION_PART.finditer(compact):
        if part.start() != end:
            return None
        seconds += float(part[1]) * DURATION_UNITS[part[2]]
        end = part.end()
    return seconds if 0 < end == len(compact) else None


def duration_text(seconds: float) -> str:
    """Seconds -> the shortest exact spelling with one unit: 7200 -> ``2h``, 0.5 -> ``500ms``,
    90 -> ``90s``, 1.25 -> ``1250ms``."""
    for unit in ("d", "h", "m", "s", "ms"):
        count = seconds / DURATION_UNITS[unit]
        if count >= 1 and abs(count - round(count)) < 1e-9:
            return f"{round(count)}{unit}"
    return f"{seconds:g}s"


def _span(seconds: float) -> str:
    if seconds == MAX_DURATION_S:
        return f"the valid time range {RANGE_TEXT} ({seconds / 86400 / 365.25:.0f} years)"
    return duration_text(seconds)


def deprecated_alias(old: str, new: str, dest: str, *, type: click.ParamType[Any] | None = None,
                     convert: Callable[[Any], Any] = lambda value: value,
                     spell: Callable[[Any], str] = str) -> Callable[[F], F]:
    """Keep the old spelling ``old`` of option ``new`` working for one release.

    ``old`` becomes a hidden option; given, its value (through ``convert``) is passed as ``dest``
    (the parameter of ``new``) and one line on stderr says what to type instead (``new`` followed
    by ``spell(converted value)``). Giving both is a usage error. Put it above the command's
    options (it wraps the command's function).
    """

    def remember(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value is None or value == ():
            return
        converted = convert(value)
        click.echo(f"fleetlog {ctx.info_name}: {old} is deprecated and goes in the next release:"
                   f" use {new} {spell(converted)}", err=True)
        ctx.meta.setdefault(_ALIASES, {})[dest] = (old, new, converted)

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def with_aliases(*args: Any, **kwargs: Any) -> Any:
            ctx = click.get_current_context()
            for name, (alias, option, value) in ctx.meta.pop(_ALIASES, {}).items():
                if ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE:
                    raise click.UsageError(f"{alias} is the old spelling of {option}: give one")
                kwargs[name] = value
            return function(*args, **kwargs)

        option = click.option(old, f"_old_{dest}", type=type, default=None, hidden=True,
                              expose_value=False, callback=remember)
        return option(with_aliases)  # type: ignore[return-value]

    return decorate


_ALIASES: Final = "fleetlog.deprecated_aliases"
