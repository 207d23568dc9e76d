"""Healthy capacity of each virtual cluster at a moment, and whether a failed job should migrate.

Read from the projections only (no generator, no store): the virtual cluster and spare flag of
each node come from the topology (``node.registered``), which nodes are busy from the jobs'
placements (``analysis.job_history``), and which are out of service from node health's outages
and the stored incidents. A node is *out* (suspect, drained or down):
- from ``node.went_down`` to ``node.came_up``, from ``node.maintenance_started`` to ``_ended``;
- from the detection of an incident rooted on it (a GPU, NIC or node of it, a link facing it, its
  rack, its leaf switch; not ``software``) until it is seen healthy again: a job placed, restarted
  or migrated onto it, ``node.came_up`` or ``node.maintenance_ended``. A scheduler drains such
  nodes and only a repair brings them back; fleetlog sees the repair when the node is used or
  comes up again.
A node is *idle and healthy* when it is neither out nor held by a running job. The scheduler
restarts a failed job on spares, then on other idle nodes of its virtual cluster, so a restart
that needs k fresh nodes has to wait when fewer than k are idle and healthy there (the local pool
lacks healthy capacity). Moving the whole job to another virtual cluster with enough idle
healthy nodes (Project Forge: pause, checkpoint, move, resume; a failed job resumes from its
last checkpoint) costs ``whatif.MIGRATE_S`` more than a local restart.

Waiting estimate (the migration's GPU-hours saved). Nodes go out and come back by *cause* (an
incident or a host outage: a leaf switch takes 32 nodes out and its repair brings all of them
back). Repairs are taken as memoryless with the mean repair time the store measured for causes
repaired before the decision (a cause is repaired when its first node is back;
``DEFAULT_REPAIR_S`` without any), so a cause already open is still due a mean repair from now.
With c causes open in the job's virtual cluster and the largest j of them needed to free the k
missing nodes, the wait is the j-th repair among c: mean × (1/c + 1/(c-1) + ...), j terms.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from fleetlog.analysis.job_history import US, JobHistory
from fleetlog.analysis.projections import NodeHealth, Topology
from fleetlog.analysis.stored_incidents import StoredIncident

# The repair time assumed before the store has measured one: the median time out of service of
# the 584 real node faults of the InfiniteHBD trace (400 servers, 345 days: 20.4 h; mean 133 h,
# a heavy tail of parts awaited for weeks), fitted by bench/repair_times.py. An assumption, said
# as one wherever it is quoted; it was 4 h, a guess, before the trace.
DEFAULT_REPAIR_S: Final = 20.4 * 3600.0
NOT_DRAINING: Final = frozenset({"software"})  # a bug in the job takes no node out


@dataclass(frozen=True)
class Pool:
    vcluster: str
    nodes: int
    spares: int  # registered as spares
    out: int  # suspect, drained or down
    idle: int  # healthy and held by no running job (spares included)


@dataclass(frozen=True)
class MigrationCheck:
    job: str
    vcluster: str
    need: int  # fresh nodes the restart needs (its nodes that are out)
    local_idle: int
    target: str | None  # another virtual cluster with room for the whole job, most idle first
    target_idle: int
    wait_s: float  # expected wait for the local pool (see the module docstring)

    @property
    def short(self) -> bool:
        return self.need > self.local_idle

    @property
    def migrate(self) -> bool:
        return self.short and self.target is not None


@dataclass
class Capacity:
    topo: Topology
    jobs: Mapping[str, JobHistory]
    # node -> (out from, back at or None, cause: an incident id or a host outage)
    out: dict[str, list[tuple[int, int | None, str]]] = field(default_factory=dict)
    reserved: dict[str, int] = field(default_factory=dict)  # vcluster -> nodes promised to moves

    def out_at(self, node: str, ts_us: int) -> bool:
        return self.cause_at(node, ts_us) is not None

    def cause_at(self, node: str, ts_us: int) -> str | None:
        for s, e, cause in self.out.get(node, ()):
            if s <= ts_us and (e is None or ts_us < e):
                return cause
        return None

    def held_at(self, ts_us: int) -> set[str]:
        held: set[str] = set()
        for h in self.jobs.values():
            if h.running_at(ts_us):
                held.update(h.nodes_at(ts_us))
        return held

    def pools_at(self, ts_us: int) -> dict[str, Pool]:
        held = self.held_at(ts_us)
        pools: dict[str, Pool] = {}
        for vcluster in sorted({info.vcluster for info in self.topo.nodes.values()}):
            members = [n for n, info in self.topo.nodes.items() if info.vcluster == vcluster]
            out = {n for n in members if self.out_at(n, ts_us)}
            idle = sum(1 for n in members if n not in out and n not in held)
            pools[vcluster] = Pool(
                vcluster, len(members), sum(1 for n in members if self.topo.nodes[n].spare),
                len(out), max(0, idle - self.reserved.get(vcluster, 0)))
        return pools

    def repair_s(self, ts_us: int) -> float:
        """Mean repair time of the causes repaired before ``ts_us`` (first node back)."""
        first_back: dict[str, float] = {}
        for spans in self.out.values():
            for s, e, cause in spans:
                if e is not None and e <= ts_us:
                    first_back[cause] = min(first_back.get(cause, math.inf), (e - s) / US)
        return statistics.fmean(first_back.values()) if first_back else DEFAULT_REPAIR_S

    def check(self, h: JobHistory, ts_us: int, suspects: Sequence[str] = ()) -> MigrationCheck:
        """Can job ``h``, failed at ``ts_us``, restart in its virtual cluster, or should it move?"""
        nodes = h.nodes_at(ts_us)
        vcluster = h.vcluster_at(ts_us) or self._majority(nodes)
        gone = {n for n in nodes if n in suspects or self.out_at(n, ts_us)}
        pools = self.pools_at(ts_us)
        local = pools.get(vcluster, Pool(vcluster, 0, 0, 0, 0))
        others = sorted((p for p in pools.values() if p.vcluster != vcluster),
                        key=lambda p: (-p.idle, p.vcluster))
        target = next((p for p in others if p.idle >= len(nodes)), None)
        short = max(0, len(gone) - local.idle)
        return MigrationCheck(
            h.job, vcluster, len(gone), local.idle, target.vcluster if target else None,
            target.idle if target else 0, self._wait_s(vcluster, ts_us, short, gone))

    def reserve(self, vcluster: str, nodes: int) -> None:
        """A recommended move takes ``nodes`` of ``vcluster``: later checks must not count them
        (the recorded history never saw the move, so its events still show them idle)."""
        self.reserved[vcluster] = self.reserved.get(vcluster, 0) + nodes

    def _wait_s(self, vcluster: str, ts_us: int, short: int, gone: set[str]) -> float:
        if short <= 0:
            return 0.0
        sizes: dict[str, int] = {}
        for n, info in self.topo.nodes.items():
            cause = self.cause_at(n, ts_us) if info.vcluster == vcluster else None
            if cause is None and n in gone:
                cause = "suspect"  # named by the failure itself, no open span yet
            if cause is not None:
                sizes[cause] = sizes.get(cause, 0) + 1
        needed, freed = 0, 0
        for size in sorted(sizes.values(), reverse=True):  # the largest repairs first
            if freed >= short:
                break
            needed, freed = needed + 1, freed + size
        # Memoryless repairs: the j-th of c open causes is repaired after mean × Σ 1/(c - i).
        return self.repair_s(ts_us) * sum(1.0 / (len(sizes) - i) for i in range(needed))

    def _majority(self, nodes: Sequence[str]) -> str:
        counts: dict[str, int] = {}
        for n in nodes:
            info = self.topo.nodes.get(n)
            if info is not None:
                counts[info.vcluster] = counts.get(info.vcluster, 0) + 1
        return max(sorted(counts), key=lambda v: counts[v]) if counts else ""


def _placed_times(jobs: Mapping[str, JobHistory]) -> dict[str, list[int]]:
    """node -> sorted times a job was placed, restarted or migrated onto it."""
    out: dict[str, list[int]] = {}
    for h in jobs.values():
        for ts, nodes in h.placements:
            for n in nodes:
                out.setdefault(n, []).append(ts)
    for times in out.values():
        times.sort()
    return out


def _next(times: Sequence[int], after: int) -> int | None:
    i = bisect.bisect_right(times, after)
    return times[i] if i < len(times) else None


def build_capacity(topo: Topology, health: NodeHealth, jobs: Mapping[str, JobHistory],
                   incidents: Sequence[StoredIncident]) -> Capacity:
    """Out-of-service spans of every node from node health's outages and the stored
    incidents."""
    spans: dict[str, list[tuple[int, int | None, str]]] = {}
    for outage in health.outages:
        spans.setdefault(outage.node, []).append((outage.start_us, outage.end_us, outage.cause))
    back = {node: sorted(times) for node, times in health.back_us.items()}
    placed = _placed_times(jobs)
    for s in incidents:
        if s.incident.category in NOT_DRAINING:
            continue
        for node in s.nodes:
            start = s.incident.detect_us
            ends = [t for t in (_next(placed.get(node, []), start),
                                _next(back.get(node, []), start)) if t is not None]
            spans.setdefault(node, []).append((start, min(ends) if ends else None, s.incident_id))
    return Capacity(topo, jobs, {n: sorted(v, key=lambda x: x[0]) for n, v in spans.items()})
