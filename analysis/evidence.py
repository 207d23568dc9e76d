"""What hardware evidence an incident stands on: the gate for actions that take capacity away.

An incident is a claim that something broke; draining, rebooting, resetting, replacing or RMA-ing
a component takes capacity away on that claim, so it needs hardware evidence among the
incident's evidence events (docs/analysis.md#recommendations):

- an XID (``xid.reported``);
- GPU counters or presence for the GPU and host categories (``gpu.sampled`` evidence of ECC,
  row remapping, NVLink errors, or a GPU/node silent after a steady cadence — the detectors
  only cite samples for those);
- port or link counters (``port.sampled``: symbol errors, receive errors, a link down);
- a host event (``node.went_down``, ``node.maintenance_started``).

Temperatures, a part slower than its peers (clock, power, data rate: the peer detectors and
the learned one cite no samples for it), job events (a failure, a hang, a loss spike, a slow
checkpoint) and the scheduler's own word (NODE_FAIL) are not hardware evidence: without any,
the advice is ``investigate`` with what to check (``CHECKS``). A ``telemetry_gap`` never takes
capacity: the node shows life. ``explain``, ``recommend`` and the report all read this one
gate, so they never disagree.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import duckdb
import polars as pl

CAPACITY_ACTIONS: Final = frozenset({
    "reset_gpu", "reboot_node", "drain_node", "rma", "replace_cable", "replace_nic",
    "replace_switch",
})
# Categories whose GPU-sample evidence is counters or presence (not temperature).
_SAMPLE_CATEGORIES: Final = frozenset({
    "gpu_hw", "gpu_hbm", "gpu_sram", "gpu_gsp", "host_hw", "rack_power", "host_maintenance",
})
_HOST_EVENTS: Final = frozenset({"node.went_down", "node.maintenance_started"})
NEVER_CAPACITY: Final = frozenset({"telemetry_gap"})

# What to check when the evidence does not support taking capacity away.
CHECKS: Final[dict[str, str]] = {
    "gpu_hw": "run DCGM diagnostics (dcgmi diag -r 3) on the GPU and read its kernel log for XIDs",
    "gpu_hbm": "read the GPU's ECC and row-remap counters (nvidia-smi -q -d ECC,ROW_REMAPPER)",
    "gpu_sram": "read the GPU's SRAM ECC counters (nvidia-smi -q -d ECC)",
    "gpu_gsp": "read the node's kernel log for XID 119/120 and the driver version",
    "gpu_thermal": "check the GPU's heatsink, fans and thermal interface; compare its "
    "temperature with its peers under the same load",
    "sdc": "run DCGM diagnostics level 3 on the job's nodes to find a corrupting GPU",
    "network": "read the port's error counters (perfquery) and the cable's transceiver",
    "nic": "read the HCA's port counters and the kernel log for mlx5 errors",
    "host_hw": "check the node's BMC (ipmitool sel list), power and kernel log; the scheduler or "
    "the samples alone do not show the hardware failed",
    "host_maintenance": "check the maintenance calendar and the node's BMC log",
    "rack_power": "check the rack's PDU and the nodes' BMC logs",
    "cooling": "check the rack's cooling (CDU, fans, inlet temperature)",
    "storage": "check the checkpoint storage system's latency and load",
    "telemetry_gap": "check the collector on the node (dcgm-exporter, node exporter, the "
    "scrape job); the node itself shows life: do not drain it",
}


def hardware_evidence(
    con: duckdb.DuckDBPyConnection, incidents: Iterable[tuple[str, str, Iterable[str]]],
) -> dict[str, list[str]]:
    """incident id -> the kinds of hardware evidence among its evidence events (empty: none).

    ``incidents``: (incident id, category, evidence event ids). One join over the event log.
    """
    pairs = [(incident_id, category, str(event_id))
             for incident_id, category, evidence in incidents for event_id in evidence]
    out: dict[str, list[str]] = {}
    if not pairs:
        return out
    frame = pl.DataFrame(pairs, schema=["incident_id", "category", "event_id"], orient="row")
    con.register("_fleetlog_evidence", frame.to_arrow())
    try:
        rows = con.execute(
            "SELECT e.incident_id, e.category, l.type, x.xid FROM _fleetlog_evidence e "
            "JOIN (SELECT DISTINCT event_id, type FROM event_log) l USING (event_id) "
            "LEFT JOIN xid_events x USING (event_id) ORDER BY 1, 3, 4").fetchall()
    finally:
        con.unregister("_fleetlog_evidence")
    for incident_id, category, kind, xid in rows:
        if category in NEVER_CAPACITY:
            continue
        found = out.setdefault(str(incident_id), [])
        what = None
        if kind == "xid.reported" and xid is not None:
            what = f"XID {xid}"
        elif kind in _HOST_EVENTS:
            what = f"host event {kind}"
        elif kind == "port.sampled":
            what = "port/link error counters"
        elif kind == "gpu.sampled" and category in _SAMPLE_CATEGORIES:
            what = "GPU counters or presence (ECC, row remap, NVLink, silence after a cadence)"
        if what is not None and what not in found:
            found.append(what)
    return out


NO_EVIDENCE: Final = ("no hardware evidence (no XID, ECC or row-remap counters, port or link "
                      "error, steady samples that stopped, or host event)")


def investigate(category: str) -> str:
    """The advice when the evidence does not support taking capacity away."""
    check = CHECKS.get(category, "read the evidence above")
    if category in NEVER_CAPACITY:
        return f"Check the collector: {check}."
    return f"Investigate: {check}. Nothing is drained, reset or replaced: {NO_EVIDENCE}."
