"""A dead letter: input that could not become an event, kept with where it came from and why.

Bad telemetry is data, not an error: every path that decodes or reads input (Kafka, jsonl files,
real-format readers, the store's own validation) turns what it cannot use into one of these, and
the writer lands it in ``dead_letters_raw`` in the same transaction as the good events.

A dead letter keeps at most ``MAX_RAW`` bytes of its input (a 10 MiB message must not become a
10 MiB row); when it had more, the error says how many bytes it had. The identifying strings are
bounded the same way (``MAX_FIELD``): they may come from hostile input too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from fleetlog.ingest.contract.events import DecodeFailure

MAX_RAW: Final = 4096  # bytes of bad input kept in dead_letters.raw
MAX_FIELD: Final = 256  # characters kept of a dead letter's event type and event id


@dataclass(frozen=True)
class DeadLetter:
    """Input that could not become an event, kept with where it came from and why."""

    origin: str  # Kafka topic or file path
    stage: str
    error: str
    raw: bytes | None = None
    partition: int | None = None
    offset: int | None = None  # Kafka offset, or line number for files
    event_type: str | None = None
    event_id: str | None = None

    def __post_init__(self) -> None:
        # Bounded here, where every path builds one, rather than by each reader and stage.
        if self.raw is not None and len(self.raw) > MAX_RAW:
            size = len(self.raw)
            object.__setattr__(self, "raw", bytes(self.raw[:MAX_RAW]))
            object.__setattr__(self, "error", f"{self.error} (input of {size:,} bytes: the "
                               f"first {MAX_RAW:,} kept)")
        for name in ("event_type", "event_id"):
            value = getattr(self, name)
            if value is not None and len(value) > MAX_FIELD:
                object.__setattr__(self, name, value[:MAX_FIELD])

    @classmethod
    def from_failure(
        cls, failure: DecodeFailure, *, origin: str, raw: bytes | None,
        partition: int | None = None, offset: int | None = None,
    ) -> DeadLetter:
        return cls(
            origin=origin, stage=failure.stage, error=failure.reason, raw=raw,
            partition=partition, offset=offset, event_type=failure.event_type,
            event_id=failure.event_id,
        )
