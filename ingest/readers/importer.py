"""``fleetlog import``: read files in real formats and land or publish their events.

Every input is read before anything is written, so an input that needs an option (``--tz``,
``--node``...) stops the import with a one-line error and nothing half-landed. Each input is then
written as one batch (its events and dead letters together).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fleetlog.ingest.readers.base import ReadOptions, ReadResult
from fleetlog.ingest.readers.registry import read_path
from fleetlog.ingest.readers.sinks import open_sink


def import_paths(
    paths: Sequence[str | Path], *, fmt: str = "auto", opts: ReadOptions | None = None,
    db: str | Path | None = None, to: tuple[str, str] | None = None,
    topic_prefix: str | None = None, progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Read ``paths`` and land them in ``db`` or publish them ``to`` Kafka; a summary."""
    options = opts or ReadOptions()
    results: list[ReadResult] = []
    for path in paths:
        results.append(read_path(Path(path), fmt, options))
        if progress:
            progress(f"read {path}: {len(results[-1].events)} events, "
                     f"{len(results[-1].dead)} dead letters")
    sink = open_sink(db=db, to=to, topic_prefix=topic_prefix)
    try:
        for result in results:
            sink.write(result.events, result.dead)
    finally:
        sink.close()
    totals = sink.totals
    landed_key = "published" if sink.target.startswith("kafka") else "landed"
    summary: dict[str, Any] = {
        "target": sink.target,
        "files": [r.summary() for r in results],
        "events_read": sum(len(r.events) for r in results),
        landed_key: totals.events,
        "dead_letters": totals.dead_letters,
    }
    if landed_key == "landed":
        summary["duplicates"] = totals.duplicates
        summary["rows"] = dict(sorted(totals.rows.items()))
    return summary
