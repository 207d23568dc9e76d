"""Where ``act`` reads its work and its past: recommendations, and the attempts already made.

Both come from a store connection: the store ``act --db`` names, or in ``act --follow`` the
store that the ingester's loop fills from the ``<prefix>.analysis`` topic (``fleetlog.act_follow``
wires that: the loop is ingestion's, so the wiring lives on the top floor). A recommendation
carries its incident's root entity, read from the ``incidents`` view, so a job action knows its
suspect node even when its reason names none.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import msgspec

from fleetlog.ingest import contract as c


@dataclass(frozen=True)
class Recommendation:
    id: str  # the recommendation.issued event's id
    incident_id: str
    time_us: int
    target: str
    action: str
    reason: str
    after: str | None = None  # the recommendation to carry out first
    root_entity: str = ""  # its incident's root ("" when the incident is not in the store)


@dataclass(frozen=True)
class Attempt:
    """One ``action.*`` event already landed: the action it was about and what became of it."""

    action_id: str
    outcome: str  # "executed" | "skipped" | "failed"
    time_us: int
    action: str
    target: str
    command: str = ""


def load_recommendations(con: duckdb.DuckDBPyConnection,
                         since_us: int | None = None) -> list[Recommendation]:
    """Every recommendation in the store (issued after ``since_us`` when given), in the order
    to carry them out: event time, then id."""
    rows = con.execute(
        "SELECT r.event_id, r.incident_id, epoch_us(r.ts), r.target, r.action, r.reason, "
        "r.after, coalesce(i.root_entity, '') FROM recommendations r "
        "LEFT JOIN incidents i USING (incident_id) "
        "WHERE $since IS NULL OR epoch_us(r.ts) > $since ORDER BY r.ts, r.event_id",
        {"since": since_us}).fetchall()
    return [Recommendation(*row) for row in rows]


def load_attempts(con: duckdb.DuckDBPyConnection) -> list[Attempt]:
    """Every action event in the store, oldest first."""
    rows = con.execute(
        "SELECT type, epoch_us(ts), payload FROM event_log WHERE type IN "
        f"({', '.join('?' for _ in c.ACTION_TYPES)}) ORDER BY ts, event_id",
        list(c.ACTION_TYPES)).fetchall()
    out = []
    for kind, time_us, payload in rows:
        fields = msgspec.json.decode(payload)
        out.append(Attempt(action_id=fields["action_id"], outcome=kind.split(".", 1)[1],
                           time_us=time_us, action=fields["action"], target=fields["target"],
                           command=fields.get("command", "")))
    return out
