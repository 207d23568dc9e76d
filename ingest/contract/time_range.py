"""The one valid event time: 1970-01-01 up to (not including) 2200-01-01 UTC.

Every path that makes an event checks its time here: ``decode`` (Kafka, jsonl files) and every
real-format reader (``import``). So an event lands through ``import`` exactly when it would land
through Kafka; outside the range it is a dead letter either way. Telemetry is never older than
the epoch, and a time two centuries out is a broken clock or a unit error (ns read as us).
"""

from __future__ import annotations

from typing import Final

MIN_TIME_US: Final = 0  # 1970-01-01T00:00:00Z
MAX_TIME_US: Final = 7_258_118_400_000_000  # 2200-01-01T00:00:00Z
RANGE_TEXT: Final = "1970..2200"


def in_range(us: int) -> bool:
    """Whether ``us`` (microseconds since the epoch, UTC) is a valid event time."""
    return MIN_TIME_US <= us <= MAX_TIME_US


def check_us(us: int) -> int:
    """``us`` if it is a valid event time, else ValueError saying the range."""
    if not in_range(us):
        raise ValueError(f"time {us} us since the epoch is outside {RANGE_TEXT}")
    return us
