"""Reading contract events back from the store, and folding them into the projections.

Non-sample events are kept verbatim (payload JSON with its schema version) in ``event_log``; they
are rebuilt here through ``contract.decode`` (``store.decode_stored``) so old versions are upcast
exactly as on the wire. Sample batches are not rebuilt: detectors read them column-wise through
the SQL views.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Final

import duckdb

from fleetlog.analysis.projections import Projections, fold_all
from fleetlog.ingest import contract as c
from fleetlog.ingest.store import decode_stored

INVENTORY_TYPES: Final = ("rack.registered", "node.registered", "switch.registered",
                          "link.registered")
HOST_TYPES: Final = ("xid.reported", "node.went_down", "node.came_up",
                     "node.maintenance_started", "node.maintenance_ended")
JOB_LIFECYCLE_TYPES: Final = (
    "job.submitted", "job.placed", "job.started", "job.checkpoint_started",
    "job.checkpoint_completed", "job.failed", "job.restarted", "job.migrated", "job.completed",
    "job.cancelled",
)
JOB_TYPES: Final = (*JOB_LIFECYCLE_TYPES, "job.step_reported")
# What the detectors' context and `fleetlog state` fold: step reports left out (they are most
# of the job events, and a job's state does not need them).
PROJECTION_TYPES: Final = (*INVENTORY_TYPES, *HOST_TYPES, *JOB_LIFECYCLE_TYPES)
# What the job history folds (what-if, capacity, job actions): a job's span and its progress
# before a failure come from its step reports.
HISTORY_TYPES: Final = (*PROJECTION_TYPES, "job.step_reported")
_BATCH: Final = 10_000  # rows decoded at a time: the events stream, never all held at once


def _quote_list(values: Sequence[str]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


def stream_events(
    con: duckdb.DuckDBPyConnection, types: Sequence[str] = PROJECTION_TYPES, *,
    until_us: int | None = None, since_us: int | None = None,
) -> Iterator[c.Envelope]:
    """Stored events of ``types`` in event-time order (ties by id), decoded and upcast, a batch
    of rows at a time; ``since_us`` inclusive, ``until_us`` exclusive.

    Rows that no longer decode are skipped here (the dead-letter path is ingestion's job).
    """
    where = [f"type IN ({_quote_list(types)})"]
    params: list[int] = []
    if since_us is not None:
        where.append("ts >= make_timestamptz(?)")
        params.append(since_us)
    if until_us is not None:
        where.append("ts < make_timestamptz(?)")
        params.append(until_us)
    # Not a cursor of its own: a store union's views are temporary, seen by this connection
    # only. So the stream must be consumed before the next query on ``con``.
    result = con.execute(
        "SELECT event_id, type, v, epoch_us(ts), source, key, payload FROM ("
        "SELECT DISTINCT ON (event_id) * FROM event_log WHERE " + " AND ".join(where) +
        ") ORDER BY ts, event_id", params,
    )
    while rows := result.fetchmany(_BATCH):
        for row in rows:
            event = decode_stored(*row)
            if event is not None:
                yield event


def load_events(
    con: duckdb.DuckDBPyConnection, types: Sequence[str] = PROJECTION_TYPES, *,
    until_us: int | None = None, since_us: int | None = None,
) -> list[c.Envelope]:
    """``stream_events`` as a list."""
    return list(stream_events(con, types, until_us=until_us, since_us=since_us))


def fold_store(
    con: duckdb.DuckDBPyConnection, types: Sequence[str] = PROJECTION_TYPES, *,
    until_us: int | None = None, since_us: int | None = None,
) -> Projections:
    """The projections over the stored events of ``types`` in ``[since_us, until_us)``."""
    return fold_all(stream_events(con, types, until_us=until_us, since_us=since_us))
