"""The incidents ``fleetlog analyze`` stored, as capacity, precursors, the what-if replay and the
job actions read them: each with its detection time, evidence and the nodes it sits on.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import duckdb

from fleetlog.analysis.diagnosis import Incident
from fleetlog.analysis.projections import Topology


@dataclass(frozen=True)
class StoredIncident:
    incident: Incident
    incident_id: str
    evidence: frozenset[str]
    nodes: frozenset[str]  # nodes the root sits on or faces (a link's NIC)


def root_nodes(root: str, topo: Topology) -> frozenset[str]:
    """The nodes an incident's root entity sits on (or, for a link, faces; for a rack, holds)."""
    kind, _, rest = root.partition(":")
    if kind in ("gpu", "nic", "node"):
        return frozenset({rest.split("/", 1)[0]})
    if kind == "link":
        switch, _, port = rest.rpartition("/")
        peer = topo.links.get((switch, int(port))) if port.isdigit() else None
        if peer and peer.startswith("nic:"):
            return frozenset({peer[4:].split("/", 1)[0]})
    if kind == "rack":
        return frozenset(topo.rack_nodes(rest))
    if kind == "switch":
        return frozenset(topo.leaf_node_ports().get(rest, {}).values())
    return frozenset()


def load_incidents(con: duckdb.DuckDBPyConnection, topo: Topology) -> list[StoredIncident]:
    """The stored incidents in start order; detection time = the event time of their
    ``incident.opened``."""
    rows = con.execute(
        "SELECT i.incident_id, i.category, i.root_entity, epoch_us(i.start_ts), "
        "epoch_us(i.end_ts), coalesce(epoch_us(d.ts), epoch_us(i.start_ts)), i.candidates, "
        "i.evidence FROM incidents i LEFT JOIN (SELECT event_id, min(ts) AS ts FROM event_log "
        "WHERE type = 'incident.opened' GROUP BY event_id) d ON d.event_id = i.incident_id "
        "ORDER BY i.start_ts, i.incident_id"
    ).fetchall()
    out = []
    for incident_id, category, root, start, end, detect, candidates, evidence in rows:
        ranked = json.loads(candidates) if isinstance(candidates, str) else candidates or []
        incident = Incident(
            category=category, root=root, start_us=int(start), detect_us=int(detect),
            end_us=int(end if end is not None else start),
            candidates=[(r["category"], r["entity"], float(r["score"])) for r in ranked],
            affected={root})
        out.append(StoredIncident(incident, incident_id, frozenset(evidence or ()),
                                  root_nodes(root, topo)))
    return out


def explaining_incidents(incidents: Sequence[StoredIncident]) -> dict[str, StoredIncident]:
    """Evidence event id -> the incident claiming it; the latest-starting one wins, as in
    diagnosis."""
    out: dict[str, StoredIncident] = {}
    for s in incidents:  # in start order (load_incidents)
        for event_id in s.evidence:
            out[event_id] = s
    return out
