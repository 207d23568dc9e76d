"""The contract: what every stage agrees on, and nothing else.

- ``events``: every fact fleetlog produces or reads, its envelope, topic, key and codec;
- ``time_range``: the one valid event time;
- ``dead_letter``: input that could not become an event;
- ``sink``: the one ``Sink`` protocol (where a stage puts events) and its ``SinkTotals``;
- ``errors``: the one root exception, ``FleetlogError``.

Stages import it as ``from fleetlog.ingest import contract as c``; the names of ``events`` are
re-exported here so ``c.GpuSampled``, ``c.decode`` and friends read as the contract's own.
"""

from __future__ import annotations

from fleetlog.ingest.contract.dead_letter import DeadLetter as DeadLetter
from fleetlog.ingest.contract.errors import FleetlogError as FleetlogError
from fleetlog.ingest.contract.events import *  # noqa: F403  # the event vocabulary, re-exported
from fleetlog.ingest.contract.sink import Sink as Sink
from fleetlog.ingest.contract.sink import SinkTotals as SinkTotals
from fleetlog.ingest.contract.time_range import MAX_TIME_US as MAX_TIME_US
from fleetlog.ingest.contract.time_range import MIN_TIME_US as MIN_TIME_US
from fleetlog.ingest.contract.time_range import check_us as check_us
from fleetlog.ingest.contract.time_range import in_range as in_range
