"""The fleet as it was at a moment: node health, jobs and open incidents, rebuilt from events.

Nothing here reads derived tables except ``incidents`` (themselves events): node health and job
state are the projections folded over every stored event up to ``at``, so the answer for a past
moment never changes as the store grows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from fleetlog.analysis.context import data_bounds
from fleetlog.analysis.events import fold_store
from fleetlog.analysis.incidents import AnalysisError
from fleetlog.analysis.severity import state as incident_state
from fleetlog.ingest.contract import to_us
from fleetlog.ingest.store import open_union


class BeforeTheFirstEvent(AnalysisError):
    """``at`` is before anything the store knows: there is no fleet to describe yet."""


def fleet_state(paths: Sequence[str | Path], at: datetime) -> dict[str, Any]:
    """The fleet at ``at``; ``BeforeTheFirstEvent`` when the store has no event up to then (an
    empty answer would read as a fleet with no nodes, no jobs and nothing wrong)."""
    at_us = to_us(at)
    con = open_union(paths)
    try:
        bounds = data_bounds(con)
        if bounds is None:
            raise BeforeTheFirstEvent("the store has no events yet: land some (`fleetlog "
                                      "ingest`, `fleetlog import`) before asking for the state")
        if at_us < bounds[0]:
            first = datetime.fromtimestamp(bounds[0] / 1e6, tz=at.tzinfo).isoformat()
            raise BeforeTheFirstEvent(f"--at {at.isoformat()} is before the first event "
                                      f"({first}): ask for a time from then on")
        # `until` is exclusive in fold_store; the state *at* T includes events stamped T.
        state = fold_store(con, until_us=at_us + 1)
        # open at T by the one rule the report, alerts and metrics use (analysis.severity)
        cursor = con.execute(
            """SELECT incident_id, start_ts, category, root_entity, round(confidence, 3),
                      epoch_us(start_ts), epoch_us(end_ts)
               FROM incidents WHERE start_ts <= ? ORDER BY start_ts, incident_id""", [at])
        open_incidents = [
            {"incident_id": i, "start_ts": s, "category": cat, "root_entity": root,
             "confidence": conf}
            for i, s, cat, root, conf, start_us, end_us in cursor.fetchall()
            if incident_state(end_us, start_us, at_us) == "open"
        ]
    finally:
        con.close()
    health = state.health
    not_up = [
        {"node": node, "state": health.state[node],
         "since": datetime.fromtimestamp(health.since_us[node] / 1e6, tz=at.tzinfo)}
        for node in sorted(health.state) if health.state[node] != "up"
    ]
    jobs = [
        {"job": info.job, "state": info.state, "gpus": info.gpus, "vcluster": info.vcluster,
         "nodes": len(info.nodes), "last_step": info.last_step, "failures": info.failures,
         "restarts": info.restarts, "outcome": info.outcome}
        for info in sorted(state.jobs.jobs.values(), key=lambda j: j.job)
    ]
    return {
        "at": at,
        "nodes": {"total": len(state.topology.nodes) or len(health.state),
                  **dict(sorted(Counter(health.state.values()).items()))},
        "nodes_not_up": not_up,
        "jobs": dict(sorted(Counter(j["state"] for j in jobs).items())),
        "job_list": jobs,
        "open_incidents": open_incidents,
    }
