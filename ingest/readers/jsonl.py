"""fleetlog's own ``jsonl`` files (one contract event per line, as ``encode_json`` writes them).

Each line goes through the contract's codec (``decode``), so schema versions are upgraded on read
and a line that does not decode becomes a dead letter with its line number and the codec's
reason (a time outside the contract's one range, 1970..2200, included). A line that decodes but
could not be published or stored (an integer beyond 64 bits) is a dead letter at stage
``validate``. Event ids, times and sources are the file's own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import msgspec

from fleetlog.ingest import contract as c
from fleetlog.ingest.contract import DeadLetter
from fleetlog.ingest.readers.base import (
    MAX_RAW,
    Collector,
    ReadOptions,
    ReadResult,
    check_us,
    short,
)
from fleetlog.ingest.readers.inputs import read_input

FORMAT: Final = "jsonl"


def sniff(head: str) -> bool:
    first = next((line for line in head.splitlines() if line.strip()), "").lstrip()
    return first.startswith("{") and '"type"' in first and '"payload"' in first


def _unstorable(event: c.Envelope) -> str | None:
    """Why a decoded event could not be published or stored, if it could not."""
    try:
        check_us(event.time_us)
        c.encode(event)
    except (ValueError, OverflowError, msgspec.EncodeError) as exc:
        return short(f"{type(exc).__name__}: {exc}")
    return None


def read(path: Path, opts: ReadOptions, data: bytes | None = None) -> ReadResult:
    """``data``: the input's bytes when the caller read them already (a pipe reads once)."""
    return parse(read_input(path) if data is None else data, origin=str(path))


def parse(data: bytes, *, origin: str) -> ReadResult:
    out = Collector(origin, FORMAT, "jsonl")
    for number, _text, raw in out.lines(data):
        if not raw.strip():
            out.take(number)
            continue
        decoded = c.decode(raw)
        if isinstance(decoded, c.DecodeFailure):
            out.add_dead(DeadLetter(
                origin=origin, stage=decoded.stage, error=short(decoded.reason), raw=raw[:MAX_RAW],
                offset=number, event_type=decoded.event_type, event_id=decoded.event_id,
            ))
            continue
        problem = _unstorable(decoded)
        if problem:
            out.add_dead(DeadLetter(
                origin=origin, stage="validate", error=problem, raw=raw[:MAX_RAW], offset=number,
                event_type=decoded.type, event_id=decoded.id,
            ))
            continue
        out.result.events.append(decoded)
        out.take(number)
    return out.done()
