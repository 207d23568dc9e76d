"""Host lifecycle events (``host_events``): maintenance, node down, node up.

These are explicit: the node's management plane says it. ``node.went_down`` carries the reason
(``reboot``, ``unreachable``, ``power loss``...), which the diagnosis uses to tell maintenance from
a hardware failure and a rack power loss. ``node.came_up`` closes a node's episode.
"""

from __future__ import annotations

from fleetlog.analysis.context import AnalysisContext, Finding
from fleetlog.ingest import contract as c

_KINDS = {
    "node.maintenance_started": "maintenance",
    "node.went_down": "node_down",
    "node.came_up": "node_up",
    "node.maintenance_ended": "maintenance_ended",
}


def detect_host_events(ctx: AnalysisContext) -> list[Finding]:
    rows = ctx.con.execute(
        "SELECT epoch_us(ts), node, type, reason, event_id FROM host_events "
        f"WHERE {ctx.ts_filter()} AND type IN ({', '.join(repr(t) for t in _KINDS)}) "
        "ORDER BY ts, event_id"
    ).fetchall()
    findings = []
    for ts, node, kind, reason, event_id in rows:
        name = _KINDS[kind]
        text = {
            "maintenance": f"node {node} entered maintenance ({reason or 'no reason given'})",
            "node_down": f"node {node} went down ({reason or 'no reason given'})",
            "node_up": f"node {node} came back up",
            "maintenance_ended": f"node {node} left maintenance",
        }[name]
        findings.append(Finding(
            kind=name, entity=c.node_entity(node), onset_us=ts, detect_us=ts, end_us=ts,
            text=text, evidence=(event_id,), attrs={"reason": reason or "", "node": node},
        ))
    return findings
