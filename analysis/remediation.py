"""Component remediation: NVIDIA's catalog action first, then escalation, behind a circuit breaker.

The policy is a pure fold over failures in time order (``Failure``), so a replay of the same
failures gives the same actions. Thresholds live in a TOML file (``RemediationConfig.load``):

    [escalation]
    window_s = 86400        # recurrences counted within this window
    reboot_after = 2        # 2nd GPU-level failure of the same GPU -> reboot its node
    drain_after = 3         # 3rd failure on the same node -> cordon and drain it
    rma_after = 4           # 4th -> send the GPU/node for RMA
    rack_nodes = 3          # this many nodes of one rack failing within rack_window_s ...
    rack_window_s = 600     # ... -> a rack-level action (check PDU / cooling)

    [circuit_breaker]
    max_drain_share = 0.05  # never drain more than this share of the fleet ...
    window_s = 3600         # ... within this window; beyond it, hold and page a human

    [[xid_threshold]]       # e.g. XID 43 at least 3 times in 10 minutes
    xid = 43
    count = 3
    window_s = 600
    action = "reset_gpu"
"""

from __future__ import annotations

import tomllib
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleetlog.analysis.evidence import CAPACITY_ACTIONS, NO_EVIDENCE
from fleetlog.ingest.store import load_xid_catalog

# NVIDIA catalog action (as written there) -> fleetlog's component action and its target level.
CATALOG_ACTIONS: dict[str, tuple[str, str]] = {
    "IGNORE": ("none", "gpu"),
    "RESTART_APP": ("restart_app", "job"),
    "CHECK_UVM": ("restart_app", "job"),
    "RESET_GPU": ("reset_gpu", "gpu"),
    "RESTART_BM": ("reboot_node", "node"),
    "RESTART_VM": ("reboot_node", "node"),
    "WORKFLOW_XID_48": ("reset_gpu", "gpu"),  # DBE: reset; recurrences escalate to RMA
    "WORKFLOW_XID_45": ("restart_app", "job"),  # preemptive cleanup after another error
    "WORKFLOW_NVLINK_ERR": ("reset_gpu", "gpu"),  # NVLink: reset the GPU/fabric, then drain
    "WORKFLOW_NVLINK5_ERR": ("reset_gpu", "gpu"),
    "CHECK_MECHANICALS": ("drain_node", "node"),  # physical inspection needs the node empty
    "UPDATE_SWFW": ("update_firmware", "node"),
    "UNEXPECTED_ERR_REPORT_ISSUE": ("report_issue", "gpu"),
}
# Category-level actions where no XID names one (network, host, rack...).
CATEGORY_ACTIONS: dict[str, str] = {
    "gpu_hw": "reset_gpu", "gpu_hbm": "reset_gpu", "gpu_sram": "reset_gpu",
    "gpu_gsp": "reset_gpu", "gpu_thermal": "drain_node", "sdc": "drain_node",
    "software": "fix_code", "nccl_hang": "restart_app", "network": "replace_cable",
    "nic": "replace_nic", "host_maintenance": "none", "host_hw": "drain_node",
    "rack_power": "check_rack_power", "cooling": "check_rack_cooling", "storage": "check_storage",
    "telemetry_gap": "check_collector",
}
ESCALATION = ("reset_gpu", "reboot_node", "drain_node", "rma")


@dataclass(frozen=True)
class XidThreshold:
    xid: int
    count: int
    window_s: float
    action: str


@dataclass(frozen=True)
class RemediationConfig:
    window_s: float = 86_400.0
    reboot_after: int = 2
    drain_after: int = 3
    rma_after: int = 4
    rack_nodes: int = 3
    rack_window_s: float = 600.0
    max_drain_share: float = 0.05
    breaker_window_s: float = 3_600.0
    xid_thresholds: tuple[XidThreshold, ...] = (XidThreshold(43, 3, 600.0, "reset_gpu"),)

    @classmethod
    def load(cls, path: str | Path) -> RemediationConfig:
        try:
            raw = tomllib.loads(Path(path).read_text("utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"cannot read remediation config {path}: {exc}") from exc
        return cls.from_mapping(raw)

    @classmethod
    def from_mapping(cls, raw: dict[str, Any]) -> RemediationConfig:
        esc = raw.get("escalation", {})
        brk = raw.get("circuit_breaker", {})
        defaults = cls()
        thresholds = tuple(
            XidThreshold(int(t["xid"]), int(t["count"]), float(t["window_s"]), str(t["action"]))
            for t in raw.get("xid_threshold", [])
        ) or defaults.xid_thresholds
        return cls(
            window_s=float(esc.get("window_s", defaults.window_s)),
            reboot_after=int(esc.get("reboot_after", defaults.reboot_after)),
            drain_after=int(esc.get("drain_after", defaults.drain_after)),
            rma_after=int(esc.get("rma_after", defaults.rma_after)),
            rack_nodes=int(esc.get("rack_nodes", defaults.rack_nodes)),
            rack_window_s=float(esc.get("rack_window_s", defaults.rack_window_s)),
            max_drain_share=float(brk.get("max_drain_share", defaults.max_drain_share)),
            breaker_window_s=float(brk.get("window_s", defaults.breaker_window_s)),
            xid_thresholds=thresholds,
        )


@dataclass(frozen=True)
class Failure:
    """One diagnosed failure (or one XID) on a component, at event time ``ts`` (seconds)."""

    ts: float
    category: str
    entity: str  # gpu:n/i, node:n, nic:..., link:..., switch:..., rack:..., job:...
    node: str | None = None
    rack: str | None = None
    xid: int | None = None
    # Whether the incident's evidence holds hardware evidence (``analysis.evidence``): without
    # it an action that takes capacity away becomes ``investigate``. The pure policy's callers
    # vouch for it; ``analysis.recommend`` reads it from the evidence.
    hardware: bool = True


@dataclass(frozen=True)
class ComponentAction:
    ts: float
    target: str
    action: str
    reason: str
    catalog_action: str | None = None


def catalog_action(xid: int, catalog: dict[int, str] | None = None) -> tuple[str, str, str]:
    """(fleetlog action, target level, NVIDIA's action string) for one XID."""
    table = catalog if catalog is not None else {x: a for x, _n, a, _f in load_xid_catalog()}
    nvidia = table.get(xid, "UNEXPECTED_ERR_REPORT_ISSUE")
    action, level = CATALOG_ACTIONS.get(nvidia, ("report_issue", "gpu"))
    return action, level, nvidia


@dataclass
class _State:
    history: dict[str, deque[float]] = field(default_factory=lambda: defaultdict(deque))
    xids: dict[tuple[str, int], deque[float]] = field(default_factory=lambda: defaultdict(deque))
    rack_failures: dict[str, deque[tuple[float, str]]] = field(
        default_factory=lambda: defaultdict(deque))
    drains: deque[float] = field(default_factory=deque)


def _recent(times: deque[float], now: float, window: float) -> int:
    while times and times[0] < now - window:
        times.popleft()
    return len(times)


def plan(
    failures: Iterable[Failure], *, fleet_nodes: int, config: RemediationConfig | None = None,
) -> list[ComponentAction]:
    """Fold failures (any order; sorted by time here) into component actions."""
    cfg = config or RemediationConfig()
    catalog = {x: a for x, _n, a, _f in load_xid_catalog()}
    thresholds = {t.xid: t for t in cfg.xid_thresholds}
    state = _State()
    actions: list[ComponentAction] = []
    for f in sorted(failures, key=lambda f: (f.ts, f.entity)):
        nvidia: str | None = None
        if f.xid is not None and f.xid in thresholds:
            rule = thresholds[f.xid]
            key = (f.entity, f.xid)
            state.xids[key].append(f.ts)
            if _recent(state.xids[key], f.ts, rule.window_s) < rule.count:
                continue
            state.xids[key].clear()
            action, target = rule.action, f.entity
            reason = f"XID {f.xid} seen {rule.count} times within {rule.window_s:.0f}s"
        elif f.xid is not None:
            action, level, nvidia = catalog_action(f.xid, catalog)
            if action == "none":
                continue
            target = _target(f, level)
            # The store's recommendations view reads catalog_action from this wording.
            reason = f"XID {f.xid}: NVIDIA's catalog says {nvidia}"
        else:
            action, target = CATEGORY_ACTIONS.get(f.category, "report_issue"), f.entity
            if f.category == "network" and f.entity.startswith("switch:"):
                action = "replace_switch"  # a whole leaf is down, not one cable
            reason = f"diagnosed {f.category} on {f.entity}"
            if action == "none":
                continue
        if not f.hardware and action in CAPACITY_ACTIONS:
            action, target = "investigate", f.entity
            reason += f"; {NO_EVIDENCE}: investigate, take no capacity away"
        action, target, reason = _escalate(f, action, target, reason, state, cfg)
        if f.rack and f.hardware:
            rack_list = state.rack_failures[f.rack]
            if f.node and all(n != f.node for _t, n in rack_list):
                rack_list.append((f.ts, f.node))
            while rack_list and rack_list[0][0] < f.ts - cfg.rack_window_s:
                rack_list.popleft()
            if len(rack_list) >= cfg.rack_nodes:
                actions.append(ComponentAction(
                    f.ts, f"rack:{f.rack}", "check_rack_power",
                    f"{len(rack_list)} nodes of rack {f.rack} failed within "
                    f"{cfg.rack_window_s:.0f}s: check its PDU and cooling before rebooting them",
                ))
                rack_list.clear()
        if action in ("drain_node", "rma"):
            allowed = max(1, int(cfg.max_drain_share * fleet_nodes))
            if _recent(state.drains, f.ts, cfg.breaker_window_s) >= allowed:
                action = "hold_for_human"
                reason += (f"; circuit breaker: {allowed} nodes already drained within "
                           f"{cfg.breaker_window_s:.0f}s, page a human instead")
            else:
                state.drains.append(f.ts)
        actions.append(ComponentAction(f.ts, target, action, reason, nvidia))
    return actions


def _target(f: Failure, level: str) -> str:
    if level == "node" and f.node:
        return f"node:{f.node}"
    return f.entity


def _escalate(
    f: Failure, action: str, target: str, reason: str, state: _State, cfg: RemediationConfig,
) -> tuple[str, str, str]:
    """GPU reset first; a recurrence reboots; more drain, then RMA."""
    if action not in ESCALATION or not f.node:
        return action, target, reason
    key = f"node:{f.node}"
    state.history[key].append(f.ts)
    count = _recent(state.history[key], f.ts, cfg.window_s)
    level = ESCALATION.index(action)
    if count >= cfg.rma_after:
        level = max(level, 3)
    elif count >= cfg.drain_after:
        level = max(level, 2)
    elif count >= cfg.reboot_after:
        level = max(level, 1)
    escalated = ESCALATION[level]
    if escalated == action:
        return action, target, reason
    new_target = target if escalated == "reset_gpu" else key
    return escalated, new_target, (
        f"{reason}; failure {count} on {key} within {cfg.window_s / 3600:.0f}h: "
        f"escalated from {action} to {escalated}"
    )
