"""``fleetlog explain``: one incident's evidence as a timeline in words, and what to do about it.

The stored incident gives the window; the analysis is re-run over that window (it is
deterministic, so it finds the same incident with the same id) to recover every finding with its
wording (with the optional detectors too when the default ones do not find it: an incident of
``analyze --learned``). When the window no longer yields that id (new data changed the
grouping), the stored evidence event ids are listed from ``event_log`` instead.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Final

import duckdb

from fleetlog.analysis.context import US, Finding
from fleetlog.analysis.detectors import OPTIONAL_DETECTORS
from fleetlog.analysis.diagnosis import Incident
from fleetlog.analysis.evidence import (
    CAPACITY_ACTIONS,
    NEVER_CAPACITY,
    hardware_evidence,
    investigate,
)
from fleetlog.analysis.incidents import AnalysisError
from fleetlog.analysis.pipeline import analyze_store
from fleetlog.analysis.remediation import CATEGORY_ACTIONS

WHAT_TO_DO: Final = {
    "gpu_hw": "Drain the node; reset the GPU (reboot if XID 79: it fell off the bus); if it "
    "recurs, RMA the GPU. Restart the job on spare nodes from its last checkpoint.",
    "gpu_hbm": "Checkpoint now if the job still runs; drain the node, reset the GPU so pending "
    "row remaps apply; a row-remap failure or repeated DBE means RMA.",
    "gpu_sram": "Drain the node and reset the GPU; repeated SRAM errors mean RMA.",
    "gpu_gsp": "Reset the GPU (GSP firmware hang); update the driver/firmware if it recurs.",
    "gpu_thermal": "The job is straggling on one hot GPU: drain the node at the next checkpoint "
    "and check the GPU's heatsink/thermal interface.",
    "sdc": "Roll the job back to the checkpoint before the loss anomaly and run GPU "
    "diagnostics (DCGM level 3) on its nodes to find the corrupting GPU.",
    "software": "No hardware signal: the job's own error. Fix the code or dependency before "
    "restarting; restarting as is will fail the same way.",
    "nccl_hang": "Kill and restart the job from its last checkpoint; collect NCCL debug logs; "
    "lower the watchdog timeout so the next hang costs less.",
    "network": "Replace the cable/transceiver (a single link) or fail over the leaf switch "
    "(every port down); jobs under it restart on nodes of another scalable unit.",
    "nic": "Drain the node and replace its HCA; restart the job on spare nodes.",
    "host_maintenance": "Planned: make sure jobs checkpoint before maintenance windows and "
    "restart on spare nodes.",
    "host_hw": "Drain the node and open a hardware ticket (SSD/PSU/board); restart the job on "
    "spare nodes from its last checkpoint.",
    "rack_power": "Rack-level escalation: check the PDU; every job with a node in the rack "
    "restarts elsewhere; do not reboot nodes one by one.",
    "cooling": "Rack-level escalation: check the rack's cooling; move jobs off the rack before "
    "GPUs throttle further.",
    "storage": "Checkpoint storage is slow: check the storage system; lengthen checkpoint "
    "intervals (Daly) until it recovers.",
    "telemetry_gap": investigate("telemetry_gap"),
}


def what_to_do(category: str, hardware: list[str]) -> str:
    """The advice for an incident: the category's, unless it would take capacity away without
    hardware evidence (``analysis.evidence``, the gate ``recommend`` applies too)."""
    takes_capacity = CATEGORY_ACTIONS.get(category) in CAPACITY_ACTIONS
    if category in NEVER_CAPACITY or (takes_capacity and not hardware):
        return investigate(category)
    return WHAT_TO_DO.get(category, "Investigate the evidence above.")


def _clock(us: int) -> str:
    return datetime.fromtimestamp(us / US, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _summarize(findings: list[Finding], interval_us: int) -> list[tuple[int, str]]:
    """One line per finding, except that many findings of one kind in the same scrape (a whole
    leaf's ports, a rack's nodes) become one line."""
    groups: list[list[Finding]] = []
    for f in sorted(findings, key=lambda f: (f.kind, f.onset_us, f.entity)):
        last = groups[-1] if groups else None
        if last and last[0].kind == f.kind and f.onset_us - last[0].onset_us <= interval_us:
            last.append(f)
        else:
            groups.append([f])
    lines = []
    for group in groups:
        first = group[0]
        if len(group) <= 3:
            lines += [(f.onset_us, f.text) for f in group]
            continue
        names = [f.entity for f in group]
        lines.append((first.onset_us, f"{len(group)} x {first.kind.replace('_', ' ')} at once "
                      f"({', '.join(names[:3])} ... {names[-1]}), e.g. {first.text}"))
    return lines


def timeline(incident: Incident, interval_us: int) -> list[str]:
    """An analysed incident's evidence in words, oldest first, ending at its detection."""
    lines = _summarize(incident.findings, interval_us)
    lines.append((incident.detect_us, f"detected: {incident.category} on {incident.root}"))
    return [f"{_clock(t)}  {text}" for t, text in sorted(lines, key=lambda x: x[0])]


def explain(con: duckdb.DuckDBPyConnection, incident_id: str) -> dict[str, Any]:
    row = con.execute(
        "SELECT incident_id, category, root_entity, confidence, epoch_us(start_ts), "
        "epoch_us(end_ts), candidates, evidence FROM incidents WHERE incident_id = ?",
        [incident_id],
    ).fetchone()
    if row is None:
        raise AnalysisError(
            f"no incident {incident_id} in this store: list them with `fleetlog incidents`"
        )
    _id, category, root, confidence, start_us, end_us, candidates, evidence = row
    ranked = json.loads(candidates) if isinstance(candidates, str) else candidates
    end = end_us if end_us is not None else start_us
    incident = None
    # The default detectors first; an incident `analyze --learned` opened needs the learned
    # detector to be found again.
    for optional in ((), tuple(OPTIONAL_DETECTORS)):
        result = analyze_store(con, start_us - 2 * 3600 * US, end + 1800 * US, optional=optional)
        incident = next((i for i in result.incidents if i.incident_id == incident_id), None)
        if incident is not None:
            break
    lines: list[str] = []
    if incident is not None:
        lines = timeline(incident, result.interval_us)
    else:
        rows = con.execute(
            "SELECT epoch_us(ts), type, key FROM event_log WHERE list_contains(?, event_id) "
            "ORDER BY ts", [list(evidence)],
        ).fetchall()
        lines = [f"{_clock(ts)}  {kind} ({key})" for ts, kind, key in rows]
    hardware = hardware_evidence(con, [(incident_id, category, evidence or ())]).get(
        incident_id, [])
    alternatives = ", ".join(
        f"{c['category']} on {c['entity']} ({c['score']:.0%})" for c in (ranked or [])[1:3]
    )
    headline = (f"{category} on {root}, confidence {float(confidence):.0%}; first symptom "
                f"{_clock(start_us)}")
    return {
        "incident_id": incident_id,
        "headline": headline,
        "timeline": lines,
        "alternatives": alternatives or "none",
        "hardware_evidence": "; ".join(hardware) or "none",
        "what_to_do": what_to_do(category, hardware),
        "evidence_events": len(evidence),
    }


def render_text(explained: dict[str, Any]) -> str:
    lines = [f"Incident {explained['incident_id']}: {explained['headline']}", "", "Timeline:"]
    lines += [f"  {line}" for line in explained["timeline"]]
    lines += ["", f"Other candidates: {explained['alternatives']}",
              f"Hardware evidence: {explained.get('hardware_evidence', 'none')}",
              f"What to do: {explained['what_to_do']}"]
    return "\n".join(lines)
