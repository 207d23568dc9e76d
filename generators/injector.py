"""Injects planned faults: picks the root entity, runs the category's symptoms, records the truth.

A ``Fault`` (``faults.Fault``) collects its ground truth while it unfolds: ``start_us`` is the
earliest symptom (``symptom(t)``), ``affected`` every entity that showed one (``touch``). When the
fault is repaired (or, for job faults, when the job has failed) one ``fault.injected`` event goes
to the truth topic, with event time = ``start_us``. A fault that showed no symptom inside the
window is not reported (it was not observable); ``Injector.unobserved`` counts them. Faults still
open at the end of the window are reported with their planned repair time.

The steps a fault runs: its fail-slow kind's (``failslow``) if it is one, else its category's
(``symptoms``), drawn from the wide shapes (``wide``) under ``--shapes wide``, from the template
(``template``) otherwise.

The injector sees the simulator as a ``world.World``; the symptoms see it back as the
``FaultLedger`` there, so they need not import this module.

Targets: a random healthy node (up, not drained, no other fault in progress), GPU, NIC, link, leaf,
rack, running job or virtual cluster, as the category needs (a fail-slow fault: a node that runs a
job, where a slow part is observable); "near" faults of a scenario pick a
target in the scalable unit of an earlier one. No target (e.g. no job running) defers the fault by
one scrape.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from fleetlog.generators import failslow
from fleetlog.generators.faults import FAILSLOW_KINDS, Fault, PlannedFault
from fleetlog.generators.shapes import Shape
from fleetlog.generators.symptoms import SYMPTOMS
from fleetlog.generators.template import TEMPLATE
from fleetlog.generators.wide import WIDE
from fleetlog.generators.world import World
from fleetlog.ingest import contract as c

NODE_CATEGORIES: Final = ("gpu_hw", "gpu_hbm", "gpu_sram", "gpu_gsp", "gpu_thermal", "nic",
                          "host_maintenance", "host_hw")
BENIGN_XIDS: Final = ((13, 0.4), (31, 0.4), (43, 0.2))
BENIGN_XID_PER_GPU_DAY: Final = 0.01
SHAPES: Final = {"template": TEMPLATE, "wide": WIDE}


class Injector:
    def __init__(self, sim: World, plan: list[PlannedFault]) -> None:
        self.sim = sim
        self.plan = plan
        self.rng = sim.rng_fault
        self.faults: list[Fault] = []
        self.by_script: dict[int, Fault] = {}
        self.node_busy = np.zeros(sim.topo.n_nodes, dtype=np.int32)
        self.busy_leaves: set[int] = set()
        self.busy_racks: set[int] = set()
        self.reported = 0
        self.unobserved = 0
        self.not_injected = 0
        self.by_category: dict[str, int] = {}

    def schedule(self) -> None:
        for planned in self.plan:
            self.sim.at(planned.at_us, lambda p=planned: self._inject(p))  # type: ignore[misc]

    # ---- targets --------------------------------------------------------------------------

    def _near_su(self, planned: PlannedFault) -> int:
        if planned.near is None:
            return -1
        other = self.by_script.get(planned.near)
        return other.su if other is not None else -1

    def _healthy_nodes(self, su: int) -> np.ndarray[tuple[int], np.dtype[np.intp]]:
        """Nodes up, not drained, with no fault in progress; for a "near" fault, nodes of the
        scalable unit ``su`` that are up and free of other faults (drained or not), if any."""
        sim = self.sim
        free = sim.tel.node_up & (self.node_busy == 0)
        if su >= 0:
            span = sim.topo.su_nodes(su)
            near = np.flatnonzero(free[span.start:span.stop]) + span.start
            if len(near):
                return near
        return np.flatnonzero(free & (sim.sched.drained == 0))

    def _pick(self, items: list[int] | np.ndarray[tuple[int], np.dtype[np.intp]]) -> int | None:
        if len(items) == 0:
            return None
        return int(items[int(self.rng.integers(len(items)))])

    def _target(self, planned: PlannedFault, fault_id: str) -> Fault | None:
        sim, topo = self.sim, self.sim.topo
        category, su = planned.category, self._near_su(planned)
        scenario = sim.config.scenario

        def new(entity: str, *, su: int = -1, gpu: int = -1, node: int = -1, port: int = -1,
                leaf: int = -1, rack: int = -1, vc: int = -1) -> Fault:
            return Fault(fault_id, category, planned.variant, entity, scenario, planned, su=su,
                         gpu=gpu, node=node, port=port, leaf=leaf, rack=rack, vc=vc)

        if category in NODE_CATEGORIES or (category == "network"
                                           and planned.variant in ("cable", "port_bandwidth")):
            nodes = self._healthy_nodes(su)
            if planned.variant in FAILSLOW_KINDS:  # a slow part matters where a job runs
                working = nodes[sim.sched.node_job[nodes] >= 0]
                nodes = working if len(working) else nodes
            node = self._pick(nodes)
            if node is None:
                return None
            node_su = int(topo.node_su[node])
            rail = int(self.rng.integers(topo.gpus_per_node))
            gpu = node * topo.gpus_per_node + rail
            if category.startswith("gpu_"):
                return new(topo.gpu_entity(gpu), gpu=gpu, node=node, su=node_su)
            if category in ("nic", "network"):
                port = int(topo.down_port[node, rail])
                if sim.tel.port_state[port] != c.PORT_STATE_ACTIVE:
                    return None
                entity = (topo.nic_entity(node, rail) if category == "nic"
                          else topo.link_entity(port))
                return new(entity, port=port, gpu=gpu, node=node, su=node_su)
            return new(topo.node_entity(node), node=node, su=node_su)
        if category == "network":  # a whole leaf switch
            leaves = [leaf for leaf in range(topo.n_leaves) if leaf not in self.busy_leaves
                      and (su < 0 or leaf // topo.gpus_per_node == su)]
            leaf = self._pick(leaves)
            if leaf is None:
                return None
            return new(c.switch_entity(topo.switch_names[leaf]), leaf=leaf,
                       su=leaf // topo.gpus_per_node)
        if category in ("rack_power", "cooling"):
            spans = [topo.rack_nodes(r) for r in range(topo.n_racks)]
            racks = [r for r, span in enumerate(spans) if r not in self.busy_racks
                     and bool(sim.tel.node_up[span.start:span.stop].all())
                     and (su < 0 or int(topo.node_su[span.start]) == su)]
            rack = self._pick(racks)
            if rack is None:
                return None
            return new(c.rack_entity(topo.rack_names[rack]), rack=rack,
                       su=int(topo.node_su[topo.rack_nodes(rack).start]))
        if category == "storage":
            vc = self._pick([v for v in range(len(topo.vc_names)) if v not in sim.sched.storage])
            if vc is None:
                return None
            return new(c.storage_entity(topo.storage_name(vc)), vc=vc)
        # job categories: a running job, chosen through a random busy node (weight = size)
        nodes = self._healthy_nodes(su)
        busy = [int(n) for n in nodes if sim.sched.node_job[n] >= 0
                and sim.sched.jobs[int(sim.sched.node_job[n])].state == "running"
                and not sim.sched.jobs[int(sim.sched.node_job[n])].faults]
        node = self._pick(busy)
        if node is None:
            return None
        slot = int(sim.sched.node_job[node])
        fault = new(sim.sched.jobs[slot].entity, su=int(topo.node_su[node]))
        fault.job = slot
        return fault

    # ---- lifecycle ------------------------------------------------------------------------

    def _inject(self, planned: PlannedFault) -> None:
        sim = self.sim
        fault = self._target(planned, f"{sim.tag}-f{len(self.faults) + 1:04d}")
        if fault is None:
            if sim.now_us + sim.config.interval_us < sim.config.end_us:
                sim.after(sim.config.interval_us, lambda: self._inject(planned))
            else:
                self.not_injected += 1
            return
        self.faults.append(fault)
        if planned.scripted is not None:
            self.by_script[planned.scripted] = fault
        fault.touch(fault.entity)
        if fault.variant in failslow.SYMPTOMS:  # a fail-slow kind's own steps
            failslow.SYMPTOMS[fault.variant](sim, fault)
        else:
            SYMPTOMS[fault.category](sim, fault, self.shape)

    @property
    def shape(self) -> Shape:
        """The shape the category steps draw from (``--shapes``)."""
        return SHAPES[self.sim.config.shapes]

    def hold_nodes(self, fault: Fault, nodes: list[int]) -> None:
        fault.nodes.extend(nodes)
        for node in nodes:
            self.node_busy[node] += 1

    def finish(self, fault: Fault, end_us: int | None = None) -> None:
        """The fault is over (repaired, or its job failed): report it once."""
        if fault.done:
            return
        if end_us is not None:
            fault.end_us = end_us
        if fault.hold > 0:
            fault.closing = True
            return
        self._report(fault)

    def release_hold(self, fault: Fault) -> None:
        fault.hold -= 1
        if fault.closing and fault.hold <= 0:
            self._report(fault)

    def _report(self, fault: Fault) -> None:
        fault.done = True
        for node in fault.nodes:
            self.node_busy[node] -= 1
        self.busy_leaves.discard(fault.leaf)
        self.busy_racks.discard(fault.rack)
        if fault.start_us is None or fault.start_us >= self.sim.config.end_us:
            self.unobserved += 1
            return
        self.reported += 1
        self.by_category[fault.category] = self.by_category.get(fault.category, 0) + 1
        self.sim.emit(c.FaultInjected(
            fault_id=fault.fault_id, category=fault.category, entity=fault.entity,
            start_us=fault.start_us, end_us=fault.end_us, affected=list(fault.affected),
            scenario=fault.scenario, detail=fault.detail or fault.variant,
        ), fault.start_us)

    def close(self) -> None:
        """End of the window: report every fault still open (with its planned end)."""
        for fault in self.faults:
            if not fault.done:
                self._report(fault)

    # ---- benign noise ---------------------------------------------------------------------

    def benign_xids(self, prev_us: int, t_us: int) -> None:
        """XID 13/31/43 on healthy busy GPUs: software-caused noise, not faults."""
        sim = self.sim
        gpus = sim.topo.n_gpus
        rate = BENIGN_XID_PER_GPU_DAY * gpus * (t_us - prev_us) / 8.64e10
        for _ in range(int(sim.rng_noise.poisson(rate))):
            gpu = int(sim.rng_noise.integers(gpus))
            node, _index = divmod(gpu, sim.topo.gpus_per_node)
            slot = int(sim.sched.node_job[node])
            if not sim.tel.present[gpu] or slot < 0:
                continue
            codes = [x for x, _ in BENIGN_XIDS]
            code = codes[int(sim.rng_noise.choice(len(codes), p=[w for _, w in BENIGN_XIDS]))]
            at = prev_us + int(sim.rng_noise.integers(1, max(2, t_us - prev_us)))
            sim.xid(gpu, code, at=at, pid=sim.sched.jobs[slot].pid)
