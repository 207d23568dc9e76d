"""XIDs from the kernel log (``xid_events``): the most explicit GPU signal there is.

Reads ``xid_events`` (NVIDIA's catalog gives name, action and the fatal flag). Every XID that
the fault model or the catalog ties to hardware becomes a finding on its GPU, with the
categories it points at; the benign software XIDs (13, 31, 43 — the application's own errors)
never open an incident on their own, but a burst of them (3 within 10 minutes, the threshold
operators use for XID 43) is kept as a weak finding.

A kernel XID line names its GPU by PCI address, not by index: the GPU inventory the store holds
for the node (``gpus``: nvidia-smi, dcgm-exporter or the simulator's ``gpu.registered``) maps the
address to ``gpu:<node>/<i>``, so the XID joins that GPU's incident. Without a mapping the XID
stays on the node and its text says why.
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


def pci_map(ctx: AnalysisContext) -> dict[tuple[str, str], int]:
    """(node, normalised PCI address) -> GPU index, from the store's GPU inventory."""
    out: dict[tuple[str, str], int] = {}
    for node, gpu, bus in ctx.con.execute(
            "SELECT node, gpu, pci_bus_id FROM gpus WHERE pci_bus_id IS NOT NULL").fetchall():
        normal = c.normalize_pci_bus_id(bus)
        if normal is not None and gpu is not None:
            out[(str(node), normal)] = int(gpu)
    return out


def _where(node: str, gpu: int | None, pci: str | None,
           buses: dict[tuple[str, str], int]) -> tuple[str, int | None, str]:
    """(entity, GPU index, why it is on the node) of one XID line."""
    if gpu is not None:
        return c.gpu_entity(node, gpu), gpu, ""
    bus = c.normalize_pci_bus_id(pci)
    if bus is None:
        return c.node_entity(node), None, "the line names no PCI address"
    index = buses.get((node, bus))
    if index is None:
        known = sum(1 for n, _b in buses if n == node)
        why = (f"PCI {bus} is not in node {node}'s GPU inventory ({known} GPUs known)" if known
               else f"no GPU inventory for node {node} maps PCI {bus} to an index "
               "(import nvidia-smi or dcgm-exporter output of the node)")
        return c.node_entity(node), None, why
    return c.gpu_entity(node, index), index, ""


def detect_xids(ctx: AnalysisContext) -> list[Finding]:
    rows = ctx.con.execute(
        "SELECT epoch_us(ts), node, gpu, xid, name, action, fatal, event_id, pci_bus_id "
        f"FROM xid_events WHERE {ctx.ts_filter()} ORDER BY ts, event_id"
    ).fetchall()
    buses = pci_map(ctx) if any(r[2] is None for r in rows) else {}
    findings: list[Finding] = []
    benign: dict[tuple[str, int | None, int], list[tuple[int, str]]] = {}
    for ts, node, gpu_field, xid, name, action, fatal, event_id, pci in rows:
        entity, gpu, unmapped = _where(node, gpu_field, pci, buses)
        if xid in BENIGN_XIDS:
            benign.setdefault((node, gpu, xid), []).append((ts, event_id))
            continue
        hints = XID_HINTS.get(xid)
        if hints is None and not fatal:
            continue  # a non-fatal XID the fault model does not use: informational
        findings.append(Finding(
            kind="xid", entity=entity, onset_us=ts, detect_us=ts, end_us=ts,
            text=f"XID {xid} ({name}) on {entity}; NVIDIA's action: {action}"
            + (f" (on the node: {unmapped})" if unmapped else ""),
            evidence=(event_id,),
            attrs={"xid": xid, "name": name, "action": action, "fatal": bool(fatal),
                   "hints": hints or ("gpu_hw",), "node": node, "unmapped": unmapped},
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
