"""``ingest_jsonl``: land the files of ``simulate --to jsonl:DIR`` through the same writer.

Each ``*.jsonl`` file in the folder holds one topic family, one ``contract.encode_json(event)``
per line. Lines are decoded with the contract; a line that fails becomes a dead letter with the
file as its origin and the line number as its offset. The number of lines landed from each file is
stored as that file's offset in the same transaction as its rows, so running again resumes after
the last committed line (and a second run over unchanged files adds nothing).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

from fleetlog.ingest.errors import SourceMissing
from fleetlog.ingest.ingester import INGEST_MEMORY_LIMIT, Progress
from fleetlog.ingest.pipeline import (
    DEFAULT_BATCH_EVENTS,
    IngestStats,
    Pending,
    fewer_gc_passes,
    stop_on_signals,
)
from fleetlog.ingest.store.database import open_store_waiting
from fleetlog.ingest.store.writer import StoreWriter


def jsonl_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise SourceMissing(f"no folder {folder}: pass --from jsonl:DIR with the folder that "
                            "`fleetlog simulate --to jsonl:DIR` wrote")
    files = sorted(folder.glob("*.jsonl"))
    if not files:
        raise SourceMissing(f"no *.jsonl files in {folder}: write some with "
                            "`fleetlog simulate --to jsonl:DIR`")
    return files


def file_key(path: Path) -> tuple[str, int]:
    """The ``ingest_offsets`` key of a file: (``file:<absolute path>``, -1); offset = lines."""
    return f"file:{path.resolve()}", -1


def _lines(path: Path, skip: int) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            if number > skip:
                yield number, line.rstrip(b"\r\n")


def ingest_jsonl(
    folder: Path, db: Path, *, batch_events: int = DEFAULT_BATCH_EVENTS,
    progress: Progress | None = None, stop: threading.Event | None = None,
    memory_limit: str | None = INGEST_MEMORY_LIMIT,
) -> IngestStats:
    """Land every ``*.jsonl`` file of ``folder`` in ``db``, resuming after stored lines."""
    stop = stop or threading.Event()
    files = jsonl_files(folder)
    stats = IngestStats(db=str(db.resolve()), source=f"jsonl:{folder}")
    writer = StoreWriter(open_store_waiting(db, memory_limit=memory_limit))

    def write(key: tuple[str, int], path: Path, chunk: list[tuple[int, bytes | None]],
              last: int) -> None:
        pending = Pending()
        pending.add_values(key, str(path), chunk, last)
        batch = pending.take()
        stats.add(writer.write_batch(batch.events, batch.dead, batch.offsets, batch.origins))
        if progress is not None:
            progress(stats)

    try:
        with stop_on_signals(stop), fewer_gc_passes() as garbage:
            stored = writer.stored_offsets()
            for path in files:
                key = file_key(path)
                first = last = stored.get(key, 0)
                chunk: list[tuple[int, bytes | None]] = []
                for number, line in _lines(path, first):
                    if stats.first_record_at is None:
                        stats.first_record_at = time.monotonic()
                    if stop.is_set():
                        break
                    if line.strip():  # blank lines are not messages
                        chunk.append((number, line))
                    last = number
                    if len(chunk) >= batch_events:
                        write(key, path, chunk, last)
                        chunk = []
                        garbage.tick()
                if last > first:
                    write(key, path, chunk, last)  # the rest, committed whole even when stopped
                if stop.is_set():
                    break
        stats.stopped_by = "signal" if stop.is_set() else "end of files"
    finally:
        writer.close()
        stats.elapsed_s = time.monotonic() - stats.started
    return stats
