"""Node health: a state machine per node, and the spans each node was out of service.

State: up -> degraded (a fatal XID) -> maintenance -> down -> up, with every transition kept.
Outages: a node is out from ``node.went_down`` to ``node.came_up`` and, separately, from
``node.maintenance_started`` to ``node.maintenance_ended`` (a node can be in maintenance and
down at once; the two end independently). Capacity (``analysis.capacity``) reads the outages and
the times each node was seen back in service; reports and ``fleetlog state`` read the state.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import ClassVar, Final

from fleetlog.analysis.projections.projector import Handler, Projector, Transition
from fleetlog.ingest import contract as c
from fleetlog.ingest.store import load_xid_catalog

NODE_STATES: Final = ("up", "degraded", "maintenance", "down")


@cache
def fatal_xids() -> frozenset[int]:
    """XIDs NVIDIA's catalog marks fatal."""
    return frozenset(x for x, _n, _a, fatal in load_xid_catalog() if fatal)


@dataclass
class Outage:
    """``node`` out of service for one ``family`` of reasons: ``down`` or ``maintenance``."""

    node: str
    family: str
    start_us: int
    end_us: int | None = None  # None: still out

    @property
    def cause(self) -> str:
        """Names the outage: every node of one repair shares it (capacity counts causes)."""
        return f"{self.family}:{self.node}:{self.start_us}"


@dataclass
class NodeHealth:
    state: dict[str, str] = field(default_factory=dict)  # node -> one of NODE_STATES
    since_us: dict[str, int] = field(default_factory=dict)
    history: list[Transition] = field(default_factory=list)
    outages: list[Outage] = field(default_factory=list)  # in the order they began
    # node -> every time it was seen back in service (node.came_up, node.maintenance_ended),
    # with or without an open outage: a node that dropped out silently says so only then.
    back_us: dict[str, list[int]] = field(default_factory=dict)


class HealthProjector(Projector[NodeHealth]):
    def _move(self, node: str, after: str, event: c.Envelope, why: str) -> None:
        before = self.state.state.get(node, "up")
        if before == after and node in self.state.state:
            return
        self.state.state[node] = after
        self.state.since_us[node] = event.time_us
        self.state.history.append(
            Transition(event.time_us, c.node_entity(node), before, after, why, event.id)
        )

    def _open(self, node: str, family: str, event: c.Envelope) -> None:
        """An outage begins, unless one of the same family is open (it began earlier)."""
        if self._open_outage(node, family) is None:
            self.state.outages.append(Outage(node, family, event.time_us))

    def _close(self, node: str, family: str, event: c.Envelope) -> None:
        self.state.back_us.setdefault(node, []).append(event.time_us)
        outage = self._open_outage(node, family)
        if outage is not None:
            outage.end_us = event.time_us

    def _open_outage(self, node: str, family: str) -> Outage | None:
        for outage in reversed(self.state.outages):
            if outage.node == node and outage.family == family and outage.end_us is None:
                return outage
        return None

    def registered(self, payload: c.NodeRegistered, event: c.Envelope) -> None:
        if payload.node not in self.state.state:
            self._move(payload.node, "up", event, "registered")

    def xid(self, payload: c.XidReported, event: c.Envelope) -> None:
        if payload.xid in fatal_xids() and self.state.state.get(payload.node, "up") == "up":
            self._move(payload.node, "degraded", event, f"fatal XID {payload.xid}")

    def maintenance_started(self, payload: c.NodeMaintenanceStarted, event: c.Envelope) -> None:
        if self.state.state.get(payload.node) != "down":
            self._move(payload.node, "maintenance", event, payload.reason or "maintenance")
        self._open(payload.node, "maintenance", event)

    def maintenance_ended(self, payload: c.NodeMaintenanceEnded, event: c.Envelope) -> None:
        if self.state.state.get(payload.node) == "maintenance":
            self._move(payload.node, "up", event, "maintenance ended")
        self._close(payload.node, "maintenance", event)

    def went_down(self, payload: c.NodeWentDown, event: c.Envelope) -> None:
        self._move(payload.node, "down", event, payload.reason or "went down")
        self._open(payload.node, "down", event)

    def came_up(self, payload: c.NodeCameUp, event: c.Envelope) -> None:
        self._move(payload.node, "up", event, "came up")
        self._close(payload.node, "down", event)

    HANDLERS: ClassVar[dict[type[c.Payload], Handler]] = {
        c.NodeRegistered: registered, c.XidReported: xid,
        c.NodeMaintenanceStarted: maintenance_started,
        c.NodeMaintenanceEnded: maintenance_ended, c.NodeWentDown: went_down,
        c.NodeCameUp: came_up,
    }


def fold_node_health(events: Iterable[c.Envelope], start: NodeHealth | None = None) -> NodeHealth:
    return HealthProjector(copy.deepcopy(start) if start is not None else NodeHealth()).fold(
        events)
