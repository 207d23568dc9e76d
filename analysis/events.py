"""Reading contract events back from the store, for the projections and for explanations.

Non-sample events are kept verbatim (payload JSON with its schema version) in ``event_log``; they
are rebuilt here through ``contract.decode`` so old versions are upcast exactly as on the wire.
Sample batches are not rebuilt: detectors read them column-wise through the SQL views.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import duckdb

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
PROJECTION_TYPES: Final = INVENTORY_TYPES + HOST_TYPES + JOB_LIFECYCLE_TYPES


def _quote_list(values: Sequence[str]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


def load_events(
    con: duckdb.DuckDBPyConnection, types: Sequence[str] = PROJECTION_TYPES, *,
    until_us: int | None = None, since_us: int | None = None,
) -> list[c.Envelope]:
    """Stored events of ``types`` in event-time order (ties by id), decoded and upcast.

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
    rows = con.execute(
        "SELECT event_id, type, v, epoch_us(ts), source, key, payload FROM ("
        "SELECT DISTINCT ON (event_id) * FROM event_log WHERE " + " AND ".join(where) +
        ") ORDER BY ts, event_id", params,
    ).fetchall()
    return [event for row in rows if (event := decode_stored(*row)) is not None]
