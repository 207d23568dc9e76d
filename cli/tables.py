"""``--table``: rich tables that never cut a value.

A table is drawn as wide as its longest unbreakable words need (an incident id, a path, a
time): prose wraps between words, identifiers stay whole on one line, so what people copy next
(``fleetlog explain inc-...``, a report's path) is always there in full. When the terminal is
narrower than that, the table is wider than the terminal (the terminal folds the lines; a pager
such as ``less -S`` scrolls) rather than ending a value in "…". Nested values are drawn as
sub-tables: a mapping as ``key value`` lines, a list of rows as a table of its own, a list of
plain values one per line.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console, RenderableType
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from fleetlog.cli.cells import cell_text

_UNBOUNDED = 100_000  # a width no table reaches: measure values at their natural size


def print_table(rows: Sequence[Mapping[str, Any]] | None, data: Any,
                columns: Sequence[str] | None, title: str | None) -> None:
    """Print ``rows`` (a list of mappings) as a table, or ``data`` as ``key value`` lines."""
    console = Console(file=sys.stdout, soft_wrap=False)
    if rows is None:
        table = _table(["key", "value"], title)
        pairs = data.items() if isinstance(data, Mapping) else [("value", data)]
        cells = [[Text(str(key)), _renderable(value)] for key, value in pairs]
    else:
        cols = list(columns or dict.fromkeys(key for row in rows for key in row))
        if not cols:  # no rows and no columns named: a table of nothing would print nothing
            console.print(title or "(no rows)", soft_wrap=True)
            return
        table = _table(cols, title)
        cells = [[_renderable(row.get(col)) for col in cols] for row in rows]
    _fit(console, table, cells)
    for rowcell_texts in cells:
        table.add_row(*rowcell_texts)
    console.print(table)


def _table(columns: Sequence[str], title: str | None) -> Table:
    table = Table(title=title, show_lines=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def _renderable(value: Any) -> RenderableType:
    """A cell: plain text, or a sub-table for a nested value."""
    if isinstance(value, Mapping) and value:
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="dim")
        grid.add_column(overflow="fold")
        for key, item in value.items():
            grid.add_row(str(key), _renderable(item))
        return grid
    if isinstance(value, list | tuple) and value:
        if all(isinstance(item, Mapping) for item in value):
            keys = list(dict.fromkeys(key for item in value for key in item))
            sub = Table(*keys, box=None, padding=(0, 1), show_edge=False, pad_edge=False)
            for item in value:
                sub.add_row(*[_renderable(item.get(key)) for key in keys])
            return sub
        grid = Table.grid()
        grid.add_column(overflow="fold")
        for item in value:
            grid.add_row(_renderable(item))
        return grid
    return Text(cell_text(value))


def _fit(console: Console, table: Table, cells: Sequence[Sequence[RenderableType]]) -> None:
    """Fix each column's width so that no column is narrower than its longest word: columns
    get their natural width when the terminal has room; otherwise each its longest word and a
    share of what is left, by how much more it would use; and when even the longest words do
    not fit, the console is widened to them."""
    options = console.options.update_width(_UNBOUNDED)
    padding = 2  # rich's default cell padding: one space each side
    least, most = [], []
    for index, column in enumerate(table.columns):
        measures = [Measurement.get(console, options, Text(str(column.header)))]
        measures += [Measurement.get(console, options, row[index]) for row in cells]
        least.append(max(m.minimum for m in measures) + padding)
        most.append(max(m.maximum for m in measures) + padding)
    borders = len(table.columns) + 1
    room = console.width - borders
    if sum(most) <= room:
        return  # rich draws it at its natural width
    if sum(least) > room:
        console.width = sum(least) + borders
        room = sum(least)
    spare, wants = room - sum(least), [m - n for m, n in zip(most, least, strict=True)]
    total = sum(wants) or 1
    for column, floor, want in zip(table.columns, least, wants, strict=True):
        column.width = floor - padding + spare * want // total
