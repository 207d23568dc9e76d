"""One renderer for every command: JSON (for scripts), --table for people (drawn by
``cli.tables``), --csv and --nl (newline-delimited JSON) for pipes. Commands return plain data and
never print themselves; each states its default output in its help (``output_options``)."""

from __future__ import annotations

import csv
import functools
import io
import json
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Final, TypeVar, cast, overload

import click

from fleetlog.cli.cells import cell_text

F = TypeVar("F", bound=Callable[..., Any])
FORMATS = ("json", "table", "csv", "nl")


_HELP: Final = {
    "json": "Output JSON.",
    "table": "Output a table for people.",
    "csv": "Output CSV.",
    "nl": "Output newline-delimited JSON, one object per line.",
}


@overload
def output_options(func: F) -> F: ...


@overload
def output_options(
    *, default: str | None = "json", help_texts: Mapping[str, str] | None = None,
) -> Callable[[F], F]: ...


def output_options(
    func: F | None = None, *, default: str | None = "json",
    help_texts: Mapping[str, str] | None = None,
) -> F | Callable[[F], F]:
    """Adds --json/--table/--csv/--nl (mutually exclusive). ``default`` is the command's real
    output when none is given: the callback receives it as ``fmt`` and its help says "(the
    default)", so the help never claims JSON for a command that prints a table.
    ``help_texts`` replaces a flag's text (e.g. ``explain``'s --table is prose);
    ``default=None`` leaves ``fmt`` None for a command whose default depends on how it runs
    (``sql``: JSON for a QUERY, a table at the prompt), and its ``help_texts`` say so."""

    def decorate(command: F) -> F:
        texts = {**_HELP, **(help_texts or {})}
        if default is not None and "the default" not in texts[default]:
            texts[default] = texts[default].removesuffix(".") + " (the default)."

        @functools.wraps(command)
        def with_default(*args: Any, **kwargs: Any) -> Any:
            if kwargs.get("fmt") is None:
                kwargs["fmt"] = default
            return command(*args, **kwargs)

        decorated: Any = with_default
        for fmt in reversed(FORMATS):
            decorated = click.option(f"--{fmt}", "fmt", flag_value=fmt, help=texts[fmt])(decorated)
        return cast(F, decorated)

    return decorate(func) if func is not None else decorate


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


def _flat(row: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``row`` with nested mappings spread into ``parent.child`` columns (CSV has no nesting)."""
    flat: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, Mapping) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


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
        table: list[Mapping[str, Any]] = rows if rows is not None else [data]
        if columns is None:  # the columns are the rows' keys: nested mappings spread out
            table = [_flat(row) for row in table]
        cols = list(columns or dict.fromkeys(key for row in table for key in row))
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(cols)
        for row in table:
            writer.writerow([cell_text(row.get(c), exact=True) for c in cols])
        out(buffer.getvalue().rstrip("\n"))
    else:
        from fleetlog.cli.tables import print_table

        print_table(rows, data, columns, title)
