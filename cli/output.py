"""One renderer for every command: JSON by default (for scripts), --table for people, --csv and
--nl (newline-delimited JSON) for pipes. Commands return plain data and never print themselves."""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])
FORMATS = ("json", "table", "csv", "nl")


def output_options(func: F) -> F:
    """Adds --json/--table/--csv/--nl (mutually exclusive; JSON when none is given)."""
    for flag, fmt, text in reversed(
        [
            ("--json", "json", "Output JSON (the default)."),
            ("--table", "table", "Output a table for people."),
            ("--csv", "csv", "Output CSV."),
            ("--nl", "nl", "Output newline-delimited JSON, one object per line."),
        ]
    ):
        func = click.option(flag, "fmt", flag_value=fmt, help=text)(func)
    return func


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def to_json(data: Any, *, indent: int | None = 2) -> str:
    """JSON as the standard has it: NaN and ±Infinity, which JSON has no words for, are null
    (as JavaScript's JSON.stringify writes them), never the bare NaN Python would print."""
    try:
        return json.dumps(data, default=_default, indent=indent, ensure_ascii=False,
                          allow_nan=False)
    except ValueError:  # a non-finite number somewhere: the rare case pays for the walk
        return json.dumps(_finite(data), default=_default, indent=indent, ensure_ascii=False,
                          allow_nan=False)


def _finite(value: Any) -> Any:
    """``value`` with every NaN and infinity (float or Decimal, at any depth) as None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    if isinstance(value, Mapping):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_finite(item) for item in value]
    return value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, list | dict):
        return to_json(value, indent=None)
    return str(value)


def render(
    data: Any,
    fmt: str | None,
    *,
    columns: Sequence[str] | None = None,
    title: str | None = None,
    out: Callable[[str], None] = click.echo,
) -> None:
    """Render a mapping or a list of row mappings in the chosen format."""
    fmt = fmt or "json"
    rows: list[Mapping[str, Any]] | None = None
    if isinstance(data, list) and all(isinstance(r, Mapping) for r in data):
        rows = data
    if fmt == "json":
        out(to_json(data))
    elif fmt == "nl":
        for row in rows if rows is not None else [data]:
            out(to_json(row, indent=None))
    elif fmt == "csv":
        table = rows if rows is not None else [data]
        cols = list(columns or (table[0].keys() if table else []))
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(cols)
        for row in table:
            writer.writerow([_cell(row.get(c)) for c in cols])
        out(buffer.getvalue().rstrip("\n"))
    else:
        _render_table(rows if rows is not None else None, data, columns, title)


def _render_table(
    rows: list[Mapping[str, Any]] | None, data: Any, columns: Sequence[str] | None,
    title: str | None,
) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=sys.stdout, soft_wrap=False)
    table = Table(title=title, show_lines=False)
    if rows is None:
        table.add_column("key")
        table.add_column("value")
        for key, value in (data.items() if isinstance(data, Mapping) else [("value", data)]):
            table.add_row(str(key), _cell(value))
    else:
        cols = list(columns or (rows[0].keys() if rows else []))
        for col in cols:
            table.add_column(col)
        for row in rows:
            table.add_row(*[_cell(row.get(c)) for c in cols])
    console.print(table)
