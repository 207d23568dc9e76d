"""A dead letter: input that could not become an event, kept with where it came from and why.

Bad telemetry is data, not an error: every path that decodes or reads input (Kafka, jsonl files,
real-format readers, the store's own validation) turns what it cannot use into one of these, and
the writer lands it in ``dead_letters_raw`` in the same transaction as the good events.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleetlog.ingest.contract.events import DecodeFailure


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
