"""Progress display for long work: a rich bar on a terminal, nothing when piped."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def progress_reporter(
    label: str, *, unit: str = "items", total: float | None = None,
) -> Iterator[Callable[[float], None]]:
    """Yields ``report(done)``; shows a live bar only when stderr is a terminal."""
    if not sys.stderr.isatty():
        yield lambda _done: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn(f"{label}"), BarColumn(), TextColumn("{task.completed:,.0f} " + unit),
        TimeElapsedColumn(), console=Console(stderr=True), transient=True,
    ) as progress:
        task = progress.add_task(label, total=total)
        yield lambda done: progress.update(task, completed=done)
