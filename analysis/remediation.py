"""Component remediation: NVIDIA's catalog action first, then escalation, behind a circuit breaker.

The policy is a pure fold over failures in time order (``Failure``), so a replay of the same
failures gives the same actions. Its thresholds (``RemediationConfig``: escalation, circuit
breaker, per-XID rules, and act's budget) are read from a TOML file checked against these
dataclasses (``RemediationConfig.load``); docs/examples/remediation.toml has every key, its
default and what it does.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from fleetlog.analysis.config_file import load_config
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
# The component actions a rule may name (an ``[[xid_threshold]]``'s ``action``).
KNOWN_ACTIONS = frozenset({a for a, _level in CATALOG_ACTIONS.values()} - {"none"}
                          | set(CATEGORY_ACTIONS.values()) - {"none"}
                          | set(ESCALATION) | {"replace_switch", "investigate"})


def _positive(config: object, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if not value > 0:
            raise ValueError(f"{name} must be more than 0, not {value:g}")


@dataclass(frozen=True)
class Escalation:
    """``[escalation]``: how recurrences on one node escalate a GPU-level action."""

    window_s: float = 86_400.0  # recurrences counted within this window (seconds)
    reboot_after: int = 2  # the 2nd failure on a node within window_s reboots it
    drain_after: int = 3  # the 3rd cordons and drains it
    rma_after: int = 4  # the 4th sends the GPU/node for RMA
    rack_nodes: int = 3  # this many nodes of one rack failing within rack_window_s ...
    rack_window_s: float = 600.0  # ... is a rack-level action (check its PDU and cooling)

    def __post_init__(self) -> None:
        _positive(self, "window_s", "reboot_after", "drain_after", "rma_after", "rack_nodes",
                  "rack_window_s")


@dataclass(frozen=True)
class CircuitBreaker:
    """``[circuit_breaker]``: never drain more than ``max_drain_share`` of the fleet within
    ``window_s`` (at least one node is always allowed); beyond it, hold and page a human."""

    max_drain_share: float = 0.05
    window_s: float = 3_600.0

    def __post_init__(self) -> None:
        _positive(self, "window_s")
        if not 0 <= self.max_drain_share <= 1:
            raise ValueError(f"max_drain_share is a share of the fleet from 0 to 1, not "
                             f"{self.max_drain_share:g}")


@dataclass(frozen=True)
class ActionBudget:
    """``[actions]``: ``fleetlog act``'s budget, at most ``max_per_node`` actions on one node
    (or job) within ``window_s``. Read by ``fleetlog.act`` only; part of this file's schema
    because it is the same file."""

    max_per_node: int = 1
    window_s: float = 3_600.0

    def __post_init__(self) -> None:
        _positive(self, "max_per_node", "window_s")


@dataclass(frozen=True)
class XidThreshold:
    """``[[xid_threshold]]``: ``action`` once XID ``xid`` was seen ``count`` times on one GPU
    within ``window_s`` (before that, nothing)."""

    xid: int
    count: int
    window_s: float
    action: str

    def __post_init__(self) -> None:
        _positive(self, "count", "window_s")
        if self.action not in KNOWN_ACTIONS:
            raise ValueError(f"action {self.action!r} is none of fleetlog's: "
                             f"{', '.join(sorted(KNOWN_ACTIONS))}")


@dataclass(frozen=True)
class RemediationConfig:
    """The remediation config file (TOML), read by ``recommend --config``, ``analyze --follow
    --remediation-config`` and ``act --remediation-config``. Each field is a table of the file;
    this class and the ones it holds are the file's schema (``analysis.config_file``), and
    docs/examples/remediation.toml lists every key with its default."""

    escalation: Escalation = field(default_factory=Escalation)
    circuit_breaker: CircuitBreaker = field(default_factory=CircuitBreaker)
    actions: ActionBudget = field(default_factory=ActionBudget)
    # Replaces the default rules when given; `xid_threshold = []` means none.
    xid_threshold: tuple[XidThreshold, ...] = (XidThreshold(43, 3, 600.0, "reset_gpu"),)

    @classmethod
    def load(cls, path: str | Path) -> RemediationConfig:
        """The file at ``path``; a misspelled key or a wrong type is a ``ConfigError`` naming
        the file, the line and the key."""
        return load_config(path, cls)


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
    esc, breaker = cfg.escalation, cfg.circuit_breaker
    catalog = {x: a for x, _n, a, _f in load_xid_catalog()}
    thresholds = {t.xid: t for t in cfg.xid_threshold}
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
            while rack_list and rack_list[0][0] < f.ts - esc.rack_window_s:
                rack_list.popleft()
            if len(rack_list) >= esc.rack_nodes:
                actions.append(ComponentAction(
                    f.ts, f"rack:{f.rack}", "check_rack_power",
                    f"{len(rack_list)} nodes of rack {f.rack} failed within "
                    f"{esc.rack_window_s:.0f}s: check its PDU and cooling before rebooting them",
                ))
                rack_list.clear()
        if action in ("drain_node", "rma"):
            allowed = max(1, int(breaker.max_drain_share * fleet_nodes))
            if _recent(state.drains, f.ts, breaker.window_s) >= allowed:
                action = "hold_for_human"
                reason += (f"; circuit breaker: {allowed} nodes already drained within "
                           f"{breaker.window_s:.0f}s, page a human instead")
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
    esc = cfg.escalation
    count = _recent(state.history[key], f.ts, esc.window_s)
    level = ESCALATION.index(action)
    if count >= esc.rma_after:
        level = max(level, 3)
    elif count >= esc.drain_after:
        level = max(level, 2)
    elif count >= esc.reboot_after:
        level = max(level, 1)
    escalated = ESCALATION[level]
    if escalated == action:
        return action, target, reason
    new_target = target if escalated == "reset_gpu" else key
    return escalated, new_target, (
        f"{reason}; failure {count} on {key} within {esc.window_s / 3600:.0f}h: "
        f"escalated from {action} to {escalated}"
    )
