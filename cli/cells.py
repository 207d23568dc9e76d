"""One value as text, for a table cell or a CSV field (``cli.output``, ``cli.tables``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any


def _number(value: float) -> str:
    """A float people can read: whole numbers whole, never an exponent on a big one (a time in
    seconds, a byte count), six significant digits otherwise."""
    if not math.isfinite(value):
        return str(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.0f}" if abs(value) >= 1e6 else f"{value:.6g}"


def cell_text(value: Any, *, exact: bool = False) -> str:
    """One value as text for a table or (``exact``: numbers in full) a CSV cell. Nested values
    never as JSON text: a mapping is ``key=value`` pairs, a list its items (the table draws
    them as sub-tables instead)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if exact else _number(value)
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")  # one word: a table never breaks it
    if isinstance(value, Mapping):
        return "; ".join(f"{key}={cell_text(item, exact=exact)}" for key, item in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return "; ".join(cell_text(item, exact=exact) for item in value)
    return str(value)
