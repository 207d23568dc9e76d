"""TOML config files checked against the dataclasses they load into: one schema, written once.

A config file's schema is a frozen dataclass (``load_config(path, RemediationConfig)``): each
field is a key, its annotation the value's type, its default the value when the key is absent.
A field whose type is itself a dataclass is a table (``[escalation]``), ``tuple[D, ...]`` of a
dataclass an array of tables (``[[xid_threshold]]``); a field without a default is required. So
a misspelled key or table, a value of the wrong type or a missing required key is refused, never
ignored: a ``ConfigError`` whose one line names the file, the line, the key and what to write
instead (``remediation.toml:12: unknown key 'max_drain_shar' in [circuit_breaker] (did you mean
max_drain_share?)``). A dataclass that checks its own values (``__post_init__`` raising
``ValueError``) has its message reported the same way.

Line numbers are best-effort: tomllib keeps none, so ``key_lines`` scans the text for table
headers and ``key =`` lines (bare, quoted and dotted keys; not keys inside inline tables or
multi-line values, which get the line of the nearest enclosing key or table, else no line).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import re
import tomllib
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from fleetlog.ingest.contract.errors import FleetlogError

T = TypeVar("T")
KeyPath = tuple[str | int, ...]  # table and key names; an int is an index in an array of tables


class ConfigError(FleetlogError):
    """A config file that cannot be read or does not fit its schema (the message says where)."""


def load_config(path: str | Path, schema: type[T]) -> T:
    """The file at ``path`` read into ``schema``, every key and value checked (module docstring)."""
    try:
        text = Path(path).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(_syntax_error(str(path), exc)) from exc
    lines = key_lines(text)
    return _Reader(str(path), lambda at: _nearest(lines, at)).table(raw, schema, ())


class _Reader:
    """Reads tomllib's dicts into a schema; each error is prefixed with ``name`` (the file) and
    the line ``line_of`` gives for the key path."""

    def __init__(self, name: str, line_of: Callable[[KeyPath], int | None]) -> None:
        self.name = name
        self.line_of = line_of

    def fail(self, at: KeyPath, message: str) -> ConfigError:
        line = self.line_of(at)
        return ConfigError(f"{self.name}:{line}: {message}" if line else f"{self.name}: {message}")

    def table(self, raw: Mapping[str, Any], schema: type[T], at: KeyPath) -> T:
        fields = {f.name: f for f in dataclasses.fields(schema)}  # type: ignore[arg-type]
        hints = typing.get_type_hints(schema)
        values: dict[str, Any] = {}
        for key, value in raw.items():  # in the file's order: the first mistake is reported
            if key not in fields:
                raise self.fail((*at, key), _unknown(key, value, at, list(fields), hints))
            values[key] = self.value(value, hints[key], (*at, key))
        for key, spec in fields.items():
            required = (spec.default is dataclasses.MISSING
                        and spec.default_factory is dataclasses.MISSING)
            if required and key not in raw:
                raise self.fail(at, f"missing key {key!r} in {_where(at)}")
        try:
            return schema(**values)
        except ValueError as exc:
            # A message that starts with a key's name ("max_drain_share is ...") is that key's.
            first = str(exc).split(" ", 1)[0]
            raise self.fail((*at, first) if first in fields else at,
                            f"{_where(at)}: {exc}") from exc

    def value(self, raw: Any, kind: Any, at: KeyPath) -> Any:
        if dataclasses.is_dataclass(kind):
            if not isinstance(raw, dict):
                raise self.fail(at, f"{_key(at)} must be a table [{_dotted(at)}], not "
                                f"{_describe(raw)}")
            return self.table(raw, kind, at)  # type: ignore[arg-type]
        origin, args = typing.get_origin(kind), typing.get_args(kind)
        if origin is tuple:  # tuple[X, ...]: an array (of tables when X is a dataclass)
            item = args[0]
            if not isinstance(raw, list):
                raise self.fail(at, f"{_key(at)} must be {_expected(kind)}, not "
                                f"{_describe(raw)}")
            return tuple(self.value(v, item, (*at, i) if dataclasses.is_dataclass(item) else at)
                         for i, v in enumerate(raw))
        if origin is dict:  # dict[str, X]: a table of free keys
            if not isinstance(raw, dict):
                raise self.fail(at, f"{_key(at)} must be a table [{_dotted(at)}], not "
                                f"{_describe(raw)}")
            return {k: self.value(v, args[1], (*at, k)) for k, v in raw.items()}
        if origin in (typing.Union, types.UnionType):
            for option in args:
                if _fits(raw, option):
                    return _convert(raw, option)
        elif _fits(raw, kind):
            return _convert(raw, kind)
        raise self.fail(at, f"{_key(at)} must be {_expected(kind)}, not {_describe(raw)}")


def _fits(raw: Any, kind: Any) -> bool:
    if kind is float:  # an integer is a number too (`window_s = 600`)
        return isinstance(raw, int | float) and not isinstance(raw, bool)
    if kind is int:
        return isinstance(raw, int) and not isinstance(raw, bool)
    if kind is type(None):
        return False  # TOML has no null: an optional key is one left out
    return isinstance(raw, kind)


def _convert(raw: Any, kind: Any) -> Any:
    return float(raw) if kind is float else raw


def _expected(kind: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
             dt.datetime: "a date-time", dt.date: "a date", dt.time: "a time"}
    if typing.get_origin(kind) is tuple:
        return f"an array of {_expected(typing.get_args(kind)[0]).split(' ', 1)[1]}s"
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return " or ".join(_expected(k) for k in typing.get_args(kind) if k is not type(None))
    if dataclasses.is_dataclass(kind):
        return "a table"
    return names.get(kind, f"a {getattr(kind, '__name__', kind)}")


def _describe(raw: Any) -> str:
    """A TOML value as the user wrote it, and what TOML calls it."""
    if isinstance(raw, bool):
        return f"{str(raw).lower()} (true or false)"
    if isinstance(raw, dict):
        return "a table"
    if isinstance(raw, list):
        return "an array"
    if isinstance(raw, str):
        shown = raw if len(raw) <= 40 else raw[:37] + "..."
        return f'"{shown}" (a string)'
    kind = {int: "an integer", float: "a number"}.get(type(raw), f"a {type(raw).__name__}")
    return f"{raw} ({kind})"


def _unknown(key: str, value: Any, at: KeyPath, known: Sequence[str],
             hints: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        hint = f" (did you mean {_named((*at, close[0]), hints[close[0]])}?)"
    else:
        hint = f" (known: {', '.join(known)})" if known else ""
    if isinstance(value, dict) or (isinstance(value, list) and value
                                   and all(isinstance(v, dict) for v in value)):
        return f"unknown table {_named((*at, key), type(value))}{hint}"
    return f"unknown key {key!r} {'in ' + _where(at) if at else 'at the top level'}{hint}"


def _named(at: KeyPath, kind: Any) -> str:
    """A key as the file writes it: ``[table]``, ``[[array_of_tables]]`` or ``key``."""
    if dataclasses.is_dataclass(kind) or kind is dict or typing.get_origin(kind) is dict:
        return f"[{_dotted(at)}]"
    if kind is list or (typing.get_origin(kind) is tuple
                        and dataclasses.is_dataclass(typing.get_args(kind)[0])):
        return f"[[{_dotted(at)}]]"
    return str(at[-1])


def _where(at: KeyPath) -> str:
    """``[escalation]``, ``[[xid_threshold]] #2`` (or "the top level")."""
    if not at:
        return "the top level"
    if isinstance(at[-1], int):
        return f"[[{_dotted(at[:-1])}]] #{at[-1] + 1}"
    return f"[{_dotted(at)}]"


def _key(at: KeyPath) -> str:
    names = [p for p in at if isinstance(p, str)]
    parent = at[:-1]
    return f"{names[-1]!r} in {_where(parent)}" if parent else repr(names[-1])


def _dotted(at: KeyPath) -> str:
    return ".".join(p for p in at if isinstance(p, str))


def _syntax_error(name: str, exc: tomllib.TOMLDecodeError) -> str:
    """tomllib's "Expected ... (at line 3, column 5)" as "file:3: invalid TOML: Expected ..."."""
    text = str(exc)
    match = re.search(r"\s*\(at line (\d+), column \d+\)$", text)
    if match:
        return f"{name}:{match.group(1)}: invalid TOML: {text[:match.start()]}"
    return f"{name}: invalid TOML: {text}"


# ---- where each key is written: a light scan of the text ----

_BARE = r"[A-Za-z0-9_-]+"
_PART = rf"(?:{_BARE}|\"(?:[^\"\\]|\\.)*\"|'[^']*')"
_KEY = rf"{_PART}(?:\s*\.\s*{_PART})*"
_ARRAY_HEADER = re.compile(rf"^\s*\[\[\s*({_KEY})\s*\]\]")
_HEADER = re.compile(rf"^\s*\[\s*({_KEY})\s*\]")
_ASSIGN = re.compile(rf"^\s*({_KEY})\s*=")


def _parts(key: str) -> list[str]:
    out = []
    for part in re.findall(_PART, key):
        if part[0] in "\"'":
            part = part[1:-1]
        out.append(part)
    return out


def key_lines(text: str) -> dict[KeyPath, int]:
    """Key path -> the 1-based line that defines it: a table header or a ``key =`` line (the
    first one, for a name written twice). Lines inside a multi-line string are skipped."""
    lines: dict[KeyPath, int] = {}
    arrays: dict[KeyPath, int] = {}  # array-of-tables path (no indices) -> its last index
    table: KeyPath = ()
    in_string: str | None = None

    def resolve(names: Sequence[str]) -> KeyPath:
        """Names to a key path, with the current index of every array of tables on the way."""
        path: list[str | int] = []
        plain: list[str] = []
        for name in names:
            path.append(name)
            plain.append(name)
            if tuple(plain) in arrays:
                path.append(arrays[tuple(plain)])
        return tuple(path)

    for number, line in enumerate(text.splitlines(), start=1):
        if in_string is not None:
            if line.count(in_string) % 2 == 1:
                in_string = None
            continue
        if match := _ARRAY_HEADER.match(line):
            names = _parts(match.group(1))
            arrays[tuple(names)] = arrays.get(tuple(names), -1) + 1
            table = resolve(names)
            lines.setdefault(table, number)
            lines.setdefault(table[:-1], number)
        elif match := _HEADER.match(line):
            table = resolve(_parts(match.group(1)))
            lines.setdefault(table, number)
        elif match := _ASSIGN.match(line):
            names = _parts(match.group(1))
            for end in range(1, len(names) + 1):
                lines.setdefault((*table, *names[:end]), number)
            rest = line[match.end():]
            in_string = next((q for q in ('"""', "'''") if rest.count(q) % 2 == 1), None)
    return lines


def _nearest(lines: Mapping[KeyPath, int], at: KeyPath) -> int | None:
    """The line of ``at``, else of the closest enclosing table or key that has one."""
    for end in range(len(at), 0, -1):
        if at[:end] in lines:
            return lines[at[:end]]
    return None
