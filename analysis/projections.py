"""Projections: derived state as pure folds over contract events.

Each projection is ``fold(events, start=None) -> state``: the state depends only on the events
(in order), never on a clock or the store, so a replay rebuilds it identically and folding in
chunks equals folding at once (``fold(b, fold(a)) == fold(a + b)``). ``start`` is copied, never
mutated. The same folds run over plain lists (tests) and over events read back from the store
(``analysis.events.load_events``).

- ``Topology``: racks, nodes, switches and cables from inventory events.
- ``NodeHealth``: a state machine per node: up -> degraded (a fatal XID) -> maintenance -> down
  -> up, with every transition kept.
- ``Jobs``: job state (submitted, placed, running, checkpointing, failed, restarting, migrated,
  completed), the nodes each job held over time (placements) and its checkpoint history.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache, singledispatchmethod
from typing import Any, Final

from fleetlog.ingest import contract as c
from fleetlog.ingest.store import load_xid_catalog

# --------------------------------------------------------------------------------------------
# Topology


@dataclass
class NodeInfo:
    node: str
    rack: str
    region: str
    vcluster: str
    gpu_count: int
    nic_count: int
    spare: bool


@dataclass
class Topology:
    racks: dict[str, dict[str, str]] = field(default_factory=dict)  # rack -> pdu, cooling_zone..
    nodes: dict[str, NodeInfo] = field(default_factory=dict)
    switches: dict[str, str] = field(default_factory=dict)  # switch -> tier
    links: dict[tuple[str, int], str] = field(default_factory=dict)  # (switch, port) -> peer

    # Derived look-ups (cheap to recompute; not part of equality).
    def rack_nodes(self, rack: str) -> list[str]:
        return sorted(n for n, info in self.nodes.items() if info.rack == rack)

    def rack_of(self, node: str) -> str | None:
        info = self.nodes.get(node)
        return info.rack if info else None

    def nic_link(self) -> dict[str, str]:
        """``nic:<node>/<i>`` -> ``link:<switch>/<port>``."""
        return {
            peer: c.link_entity(sw, port) for (sw, port), peer in self.links.items()
            if peer.startswith("nic:")
        }

    def link_peer(self, switch: str, port: int) -> str | None:
        return self.links.get((switch, port))

    def leaf_node_ports(self) -> dict[str, dict[int, str]]:
        """leaf switch -> {port: node} for ports facing a node's NIC."""
        out: dict[str, dict[int, str]] = {}
        for (sw, port), peer in self.links.items():
            if peer.startswith("nic:"):
                out.setdefault(sw, {})[port] = peer[4:].split("/", 1)[0]
        return out


class _TopologyProjector:
    def __init__(self, state: Topology) -> None:
        self.state = state

    @singledispatchmethod
    def apply(self, payload: c.Payload, event: c.Envelope) -> None:
        """Events of other types leave the topology unchanged."""

    @apply.register
    def _(self, payload: c.RackRegistered, event: c.Envelope) -> None:
        self.state.racks[payload.rack] = {
            "region": payload.region, "pdu": payload.pdu, "cooling_zone": payload.cooling_zone,
        }

    @apply.register
    def _(self, payload: c.NodeRegistered, event: c.Envelope) -> None:
        self.state.nodes[payload.node] = NodeInfo(
            node=payload.node, rack=payload.rack, region=payload.region,
            vcluster=payload.vcluster, gpu_count=payload.gpu_count,
            nic_count=payload.nic_count, spare=payload.spare,
        )

    @apply.register
    def _(self, payload: c.SwitchRegistered, event: c.Envelope) -> None:
        self.state.switches[payload.switch] = payload.tier

    @apply.register
    def _(self, payload: c.LinkRegistered, event: c.Envelope) -> None:
        self.state.links[(payload.switch, payload.port)] = payload.peer


def fold_topology(events: Iterable[c.Envelope], start: Topology | None = None) -> Topology:
    projector = _TopologyProjector(copy.deepcopy(start) if start else Topology())
    for event in events:
        projector.apply(event.payload, event)
    return projector.state


# --------------------------------------------------------------------------------------------
# Node health


NODE_STATES: Final = ("up", "degraded", "maintenance", "down")


@cache
def fatal_xids() -> frozenset[int]:
    """XIDs NVIDIA's catalog marks fatal."""
    return frozenset(x for x, _n, _a, fatal in load_xid_catalog() if fatal)


@dataclass(frozen=True)
class Transition:
    ts_us: int
    entity: str
    before: str
    after: str
    why: str
    event_id: str


@dataclass
class NodeHealth:
    state: dict[str, str] = field(default_factory=dict)  # node -> one of NODE_STATES
    since_us: dict[str, int] = field(default_factory=dict)
    history: list[Transition] = field(default_factory=list)


class _HealthProjector:
    def __init__(self, state: NodeHealth) -> None:
        self.state = state

    def _move(self, node: str, after: str, event: c.Envelope, why: str) -> None:
        before = self.state.state.get(node, "up")
        if before == after and node in self.state.state:
            return
        self.state.state[node] = after
        self.state.since_us[node] = event.time_us
        self.state.history.append(
            Transition(event.time_us, c.node_entity(node), before, after, why, event.id)
        )

    @singledispatchmethod
    def apply(self, payload: c.Payload, event: c.Envelope) -> None:
        """Other events do not move a node."""

    @apply.register
    def _(self, payload: c.NodeRegistered, event: c.Envelope) -> None:
        if payload.node not in self.state.state:
            self._move(payload.node, "up", event, "registered")

    @apply.register
    def _(self, payload: c.XidReported, event: c.Envelope) -> None:
        if payload.xid in fatal_xids() and self.state.state.get(payload.node, "up") == "up":
            self._move(payload.node, "degraded", event, f"fatal XID {payload.xid}")

    @apply.register
    def _(self, payload: c.NodeMaintenanceStarted, event: c.Envelope) -> None:
        if self.state.state.get(payload.node) != "down":
            self._move(payload.node, "maintenance", event, payload.reason or "maintenance")

    @apply.register
    def _(self, payload: c.NodeMaintenanceEnded, event: c.Envelope) -> None:
        if self.state.state.get(payload.node) == "maintenance":
            self._move(payload.node, "up", event, "maintenance ended")

    @apply.register
    def _(self, payload: c.NodeWentDown, event: c.Envelope) -> None:
        self._move(payload.node, "down", event, payload.reason or "went down")

    @apply.register
    def _(self, payload: c.NodeCameUp, event: c.Envelope) -> None:
        self._move(payload.node, "up", event, "came up")


def fold_node_health(events: Iterable[c.Envelope], start: NodeHealth | None = None) -> NodeHealth:
    projector = _HealthProjector(copy.deepcopy(start) if start else NodeHealth())
    for event in events:
        projector.apply(event.payload, event)
    return projector.state


# --------------------------------------------------------------------------------------------
# Jobs: state, placements, checkpoints


JOB_STATES: Final = (
    "submitted", "placed", "running", "checkpointing", "failed", "restarting", "migrated",
    "completed", "cancelled",
)


@dataclass
class Placement:
    """``job`` held ``nodes`` from ``start_us`` until ``end_us`` (None: still holds them)."""

    job: str
    nodes: tuple[str, ...]
    start_us: int
    end_us: int | None = None
    why: str = "placed"


@dataclass
class Checkpoint:
    job: str
    step: int
    started_us: int | None
    completed_us: int | None = None
    duration_s: float | None = None
    size_gb: float | None = None


@dataclass
class JobInfo:
    job: str
    state: str
    gpus: int = 0
    vcluster: str = ""
    nodes: tuple[str, ...] = ()
    last_step: int = 0
    last_step_us: int | None = None
    failures: int = 0
    restarts: int = 0
    migrations: int = 0
    last_failure: dict[str, Any] | None = None


@dataclass
class Jobs:
    jobs: dict[str, JobInfo] = field(default_factory=dict)
    placements: list[Placement] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    history: list[Transition] = field(default_factory=list)

    def nodes_at(self, job: str, ts_us: int) -> tuple[str, ...]:
        """The nodes ``job`` held at ``ts_us`` (the last placement starting before it)."""
        held: tuple[str, ...] = ()
        for p in self.placements:
            if p.job == job and p.start_us <= ts_us:
                held = p.nodes
        return held


class _JobsProjector:
    def __init__(self, state: Jobs) -> None:
        self.state = state

    def _job(self, name: str) -> JobInfo:
        info = self.state.jobs.get(name)
        if info is None:
            info = self.state.jobs[name] = JobInfo(job=name, state="submitted")
        return info

    def _move(self, info: JobInfo, after: str, event: c.Envelope, why: str) -> None:
        if info.state != after:
            self.state.history.append(
                Transition(event.time_us, c.job_entity(info.job), info.state, after, why, event.id)
            )
            info.state = after

    def _release(self, job: str, ts_us: int) -> None:
        for p in self.state.placements:
            if p.job == job and p.end_us is None:
                p.end_us = ts_us

    def _place(self, info: JobInfo, nodes: list[str], event: c.Envelope, why: str) -> None:
        self._release(info.job, event.time_us)
        info.nodes = tuple(nodes)
        self.state.placements.append(Placement(info.job, tuple(nodes), event.time_us, None, why))

    @singledispatchmethod
    def apply(self, payload: c.Payload, event: c.Envelope) -> None:
        """Other events leave jobs unchanged."""

    @apply.register
    def _(self, payload: c.JobSubmitted, event: c.Envelope) -> None:
        info = self._job(payload.job)
        info.gpus, info.vcluster = payload.gpus, payload.vcluster

    @apply.register
    def _(self, payload: c.JobPlaced, event: c.Envelope) -> None:
        info = self._job(payload.job)
        info.vcluster = payload.vcluster
        self._place(info, payload.nodes, event, "placed")
        # Schedulers stamp "placed" and "started" with the same time (sacct's Start does), and
        # same-time events carry no order: a placement never moves a started job backwards.
        if info.state in ("submitted", "failed", "cancelled"):
            self._move(info, "placed", event, "placed")

    @apply.register
    def _(self, payload: c.JobStarted, event: c.Envelope) -> None:
        info = self._job(payload.job)
        info.last_step = payload.step
        self._move(info, "running", event, "started")

    @apply.register
    def _(self, payload: c.JobStepReported, event: c.Envelope) -> None:
        info = self._job(payload.job)
        info.last_step, info.last_step_us = payload.step, event.time_us
        if info.state in ("placed", "restarting", "migrated"):
            self._move(info, "running", event, "step reported")

    @apply.register
    def _(self, payload: c.JobCheckpointStarted, event: c.Envelope) -> None:
        info = self._job(payload.job)
        self.state.checkpoints.append(Checkpoint(payload.job, payload.step, event.time_us))
        self._move(info, "checkpointing", event, f"checkpoint at step {payload.step}")

    @apply.register
    def _(self, payload: c.JobCheckpointCompleted, event: c.Envelope) -> None:
        info = self._job(payload.job)
        for cp in reversed(self.state.checkpoints):
            if cp.job == payload.job and cp.completed_us is None:
                break
        else:
            cp = Checkpoint(payload.job, payload.step, None)
            self.state.checkpoints.append(cp)
        cp.completed_us, cp.duration_s, cp.size_gb = (
            event.time_us, payload.duration_s, payload.size_gb
        )
        cp.step = payload.step
        if info.state == "checkpointing":
            self._move(info, "running", event, "checkpoint completed")

    @apply.register
    def _(self, payload: c.JobFailed, event: c.Envelope) -> None:
        info = self._job(payload.job)
        info.failures += 1
        info.last_failure = {
            "ts_us": event.time_us, "exit_code": payload.exit_code, "reason": payload.reason,
            "step": payload.step, "lost_s": payload.lost_s,
        }
        self._release(payload.job, event.time_us)
        self._move(info, "failed", event, payload.reason)

    @apply.register
    def _(self, payload: c.JobRestarted, event: c.Envelope) -> None:
        info = self._job(payload.job)
        info.restarts += 1
        info.last_step = payload.from_step
        self._place(info, payload.nodes, event, "restarted")
        self._move(info, "restarting", event, f"restarted from step {payload.from_step}")

    @apply.register
    def _(self, payload: c.JobMigrated, event: c.Envelope) -> None:
        info = self._job(payload.job)
        info.migrations += 1
        info.vcluster = payload.to_vcluster
        self._place(info, payload.nodes, event, "migrated")
        self._move(info, "migrated", event, f"{payload.from_vcluster} -> {payload.to_vcluster}")

    @apply.register
    def _(self, payload: c.JobCompleted, event: c.Envelope) -> None:
        info = self._job(payload.job)
        info.last_step = payload.step
        self._release(payload.job, event.time_us)
        self._move(info, "completed", event, "completed")

    @apply.register
    def _(self, payload: c.JobCancelled, event: c.Envelope) -> None:
        info = self._job(payload.job)
        self._release(payload.job, event.time_us)
        self._move(info, "cancelled", event, payload.reason or "cancelled")


def fold_jobs(events: Iterable[c.Envelope], start: Jobs | None = None) -> Jobs:
    projector = _JobsProjector(copy.deepcopy(start) if start else Jobs())
    for event in events:
        projector.apply(event.payload, event)
    return projector.state


# --------------------------------------------------------------------------------------------
# All three at once


@dataclass
class Projections:
    topology: Topology = field(default_factory=Topology)
    health: NodeHealth = field(default_factory=NodeHealth)
    jobs: Jobs = field(default_factory=Jobs)


def fold_all(events: Iterable[c.Envelope], start: Projections | None = None) -> Projections:
    """One pass over ``events`` updating every projection (same result as the separate folds)."""
    state = copy.deepcopy(start) if start else Projections()
    topo, health, jobs = (
        _TopologyProjector(state.topology), _HealthProjector(state.health),
        _JobsProjector(state.jobs),
    )
    for event in events:
        topo.apply(event.payload, event)
        health.apply(event.payload, event)
        jobs.apply(event.payload, event)
    return state
