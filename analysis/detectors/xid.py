"""XIDs from the kernel log (``xid_events``): the most explicit GPU signal there is.

Reads ``xid_events`` (NVIDIA's catalog gives name, action and the fatal flag). Every XID that
the fault model or the catalog ties to hardware becomes a finding on its GPU, with the
categories it points at; the benign software XIDs (13, 31, 43 — the application's own errors)
never open an incident on their own, but a burst of them (3 within 10 minutes, the threshold
operators use for XID 43) is kept as a weak finding.
"""

from __future__ import annotations

from typing import Final

from fleetlog.analysis.context import US, AnalysisContext, Finding
from fleetlog.ingest import contract as c

# XID -> categories it points at, strongest first (docs/faults.md, NVIDIA's XID catalog).
XID_HINTS: Final[dict[int, tuple[str, ...]]] = {
    79: ("gpu_hw",),  # fallen off the bus
    74: ("gpu_hw",),  # NVLink error
    62: ("gpu_hw",),  # PMU halt
    45: ("gpu_hw",),  # preemptive removal
    48: ("gpu_hbm",),  # double-bit ECC
    63: ("gpu_hbm",),  # row remap event
    64: ("gpu_hbm",),  # row remap failure
    92: ("gpu_hbm",),  # excessive SBE interrupts
    140: ("gpu_hbm",),  # unrecoverable ECC escape
    94: ("gpu_sram", "gpu_hbm"),  # contained ECC error (SRAM or HBM)
    95: ("gpu_sram", "gpu_hbm"),  # uncontained ECC error
    119: ("gpu_gsp",),  # GSP RPC timeout
    120: ("gpu_gsp",),  # GSP error
}
BENIGN_XIDS: Final = frozenset({13, 31, 43})
BURST_COUNT: Final = 3
BURST_WINDOW_US: Final = 600 * US


def detect_xids(ctx: AnalysisContext) -> list[Finding]:
    rows = ctx.con.execute(
        "SELECT epoch_us(ts), node, gpu, xid, name, action, fatal, event_id FROM xid_events "
        f"WHERE {ctx.ts_filter()} ORDER BY ts, event_id"
    ).fetchall()
    findings: list[Finding] = []
    benign: dict[tuple[str, int | None, int], list[tuple[int, str]]] = {}
    for ts, node, gpu, xid, name, action, fatal, event_id in rows:
        entity = c.gpu_entity(node, gpu) if gpu is not None else c.node_entity(node)
        if xid in BENIGN_XIDS:
            benign.setdefault((node, gpu, xid), []).append((ts, event_id))
            continue
        hints = XID_HINTS.get(xid)
        if hints is None and not fatal:
            continue  # a non-fatal XID the fault model does not use: informational
        findings.append(Finding(
            kind="xid", entity=entity, onset_us=ts, detect_us=ts, end_us=ts,
            text=f"XID {xid} ({name}) on {entity}; NVIDIA's action: {action}",
            evidence=(event_id,),
            attrs={"xid": xid, "name": name, "action": action, "fatal": bool(fatal),
                   "hints": hints or ("gpu_hw",), "node": node},
        ))
    for (node, gpu, xid), hits in benign.items():
        for i in range(len(hits) - BURST_COUNT + 1):
            first, last = hits[i], hits[i + BURST_COUNT - 1]
            if last[0] - first[0] <= BURST_WINDOW_US:
                entity = c.gpu_entity(node, gpu) if gpu is not None else c.node_entity(node)
                findings.append(Finding(
                    kind="xid_burst", entity=entity, onset_us=first[0], detect_us=last[0],
                    end_us=last[0],
                    text=f"XID {xid} {BURST_COUNT} times within 10 min on {entity}",
                    evidence=tuple(e for _t, e in hits[i:i + BURST_COUNT]),
                    attrs={"xid": xid, "node": node},
                ))
                break
    return findings
