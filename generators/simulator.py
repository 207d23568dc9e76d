"""The time loop: inventory first, then one chunk of events per scrape, in simulated time.

``Simulator(config).chunks()`` yields lists of contract events. Between two scrapes it runs the
scheduled actions (fault steps, checkpoints, restarts...) in time order; their events carry their
own times. Each chunk is that interval's events sorted by time, then the scrape's ``gpu.sampled``
(one per rack) and ``port.sampled`` (one per switch) batches. Event ids are
``sim<seed>-<run tag>-<counter>``: deterministic, and different for different parameters.

Determinism: every random draw comes from one of a few numpy Generators spawned from the seed (so
adding draws in one part does not shift another), actions with equal times run in the order they
were scheduled, and nothing reads the wall clock or iterates over an unordered set.

The ``Simulator`` is the composition: it builds the telemetry, the scheduler (``workload``) and the
injector (which runs ``symptoms``) and hands each one itself, seen as a ``world.World``; no part
imports this module (or another part for its types).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from fleetlog.generators import confounders
from fleetlog.generators.config import SOURCE, SimConfig, SimulationError
from fleetlog.generators.faults import Fault, PlannedFault, get_scenario, plan_faults
from fleetlog.generators.injector import Injector
from fleetlog.generators.jobs import Job
from fleetlog.generators.symptoms import XID_TEXT
from fleetlog.generators.telemetry import Telemetry
from fleetlog.generators.topology import Topology, build_topology, pci_bus_id
from fleetlog.generators.workload import Scheduler
from fleetlog.ingest import contract as c


@dataclass
class SimStats:
    events: int = 0
    gpu_samples: int = 0
    port_samples: int = 0
    ticks: int = 0


class Simulator:
    def __init__(self, config: SimConfig) -> None:
        get_scenario(config.scenario)  # fail early on a bad name
        self.config = config
        self.topo: Topology = build_topology(config)
        tel_seed, work_seed, plan_seed, fault_seed, noise_seed = (
            np.random.SeedSequence(config.seed).spawn(5)
        )
        self.rng_work = np.random.default_rng(work_seed)
        self.rng_fault = np.random.default_rng(fault_seed)
        self.rng_noise = np.random.default_rng(noise_seed)
        self.tel = Telemetry(self.topo, config, np.random.default_rng(tel_seed))
        self.sched = Scheduler(self)
        self.plan: list[PlannedFault] = plan_faults(config, np.random.default_rng(plan_seed))
        self.injector = Injector(self, self.plan)
        self.tag = f"sim{config.seed}-{config.run_tag()}"
        self.now_us = config.start_us
        self.stats = SimStats()
        self._queue: list[tuple[int, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._pending: list[tuple[int, int, c.Payload]] = []
        self._ids = map(f"{self.tag}-{{}}".format, itertools.count(1))
        self._started = False

    # ---- the world's API (used by the scheduler, injector and symptoms: world.World) -------

    def at(self, t_us: int, action: Callable[[], None]) -> None:
        """Run ``action`` at simulated time ``t_us`` (never in the past)."""
        heapq.heappush(self._queue, (max(int(t_us), self.now_us), next(self._order), action))

    def after(self, delay_us: int, action: Callable[[], None]) -> None:
        self.at(self.now_us + delay_us, action)

    def emit(self, payload: c.Payload, time_us: int | None = None) -> None:
        """Queue an event (at ``time_us``, default now) for the current chunk."""
        self._pending.append((self.now_us if time_us is None else int(time_us),
                              next(self._order), payload))

    def next_tick(self, t_us: int) -> int:
        """The first scrape at or after ``t_us``."""
        start, step = self.config.start_us, self.config.interval_us
        return start + max(0, -(-(t_us - start) // step)) * step

    def xid(self, gpu: int, code: int, *, fault: Fault | None = None, at: int | None = None,
            pid: int | None = None) -> None:
        node, index = divmod(gpu, self.topo.gpus_per_node)
        if pid is None and self.sched.node_job[node] >= 0:
            pid = self.sched.jobs[int(self.sched.node_job[node])].pid
        t = self.now_us if at is None else at
        self.emit(c.XidReported(node=self.topo.node_names[node], gpu=index,
                                pci_bus_id=pci_bus_id(index), xid=code,
                                message=XID_TEXT.get(code, ""), pid=pid), t)
        if fault is not None:
            fault.symptom(t)
            fault.touch(self.topo.gpu_entity(gpu))

    def request_migration(self, job_id: str, vcluster: str, at_us: int | None = None) -> None:
        """Ask the scheduler to migrate a job to another virtual cluster (at ``at_us``)."""
        jobs = {j.id: j for j in self.sched.jobs}
        if job_id not in jobs or vcluster not in self.topo.vc_names:
            raise SimulationError(f"no job {job_id!r} or virtual cluster {vcluster!r}")
        job, vc = jobs[job_id], self.topo.vc_names.index(vcluster)
        self.at(self.now_us if at_us is None else at_us,
                lambda: self.sched.request_migration(job, vc))

    # ---- the loop -------------------------------------------------------------------------

    def _run_until(self, t_us: int) -> None:
        queue = self._queue
        while queue and queue[0][0] <= t_us:
            when, _, action = heapq.heappop(queue)
            self.now_us = when
            action()
        self.now_us = t_us

    def _flush(self) -> list[c.Envelope]:
        pending = sorted(self._pending, key=lambda item: (item[0], item[1]))
        self._pending = []
        return [c.make_event(p, time_us=t, source=SOURCE, id=next(self._ids))
                for t, _, p in pending]

    def _migrate_one(self) -> None:
        """The migration scenario: move the largest running job that fits to the next VC."""
        n_vcs = len(self.topo.vc_names)
        if n_vcs < 2:
            self.sched.stats.migrations_refused += 1
            return
        target = 1
        room = len(self.sched.free[target]) + len(self.sched.spares[target])
        fits: list[Job] = [j for j in self.sched.active
                           if j.vc == 0 and j.state == "running" and j.size <= room]
        if not fits:
            self.sched.stats.migrations_refused += 1
            return
        job = max(fits, key=lambda j: (j.size, -j.slot))
        self.sched.request_migration(job, target)

    def chunks(self) -> Iterator[list[c.Envelope]]:
        """The whole stream: inventory, then one list of events per scrape, then the truth."""
        if self._started:
            raise SimulationError("a Simulator runs once: make a new one")
        self._started = True
        config = self.config
        start, step = config.start_us, config.interval_us
        for payload in self.topo.inventory():
            self.emit(payload, start)
        self.sched.bootstrap()
        self.injector.schedule()
        if get_scenario(config.scenario).confounders:
            confounders.schedule(self)
        window = config.end_us - start
        for share in get_scenario(config.scenario).migrations:
            self.at(start + round(share * window), self._migrate_one)
        inventory = self._flush()
        self.stats.events += len(inventory)
        yield inventory
        prev = start - step
        for k in range(config.ticks):
            t = start + k * step
            self._run_until(t)
            self.injector.benign_xids(prev, t)
            self.sched.tick(t, prev)
            gpu_columns = self.tel.gpu_columns(t)
            port_columns = self.tel.port_columns()
            events = self._flush()
            samples, rows = self.tel.gpu_batches(t, gpu_columns, self._ids)
            ports = self.tel.port_batches(t, port_columns, self._ids)
            events.extend(samples)
            events.extend(ports)
            self.stats.ticks += 1
            self.stats.gpu_samples += rows
            self.stats.port_samples += self.topo.n_ports
            self.stats.events += len(events)
            prev = t
            yield events
        self._run_until(config.end_us - 1)
        self.injector.close()
        tail = self._flush()
        self.stats.events += len(tail)
        yield tail

    def summary(self) -> dict[str, Any]:
        inj, sched = self.injector, self.sched.stats
        return {
            "nodes": self.topo.n_nodes,
            "gpus": self.topo.n_gpus,
            "scenario": self.config.scenario,
            "seed": self.config.seed,
            "start": self.config.start.isoformat(),
            "hours": self.config.hours,
            "events": self.stats.events,
            "gpu_samples": self.stats.gpu_samples,
            "port_samples": self.stats.port_samples,
            "faults": inj.reported,
            "faults_by_category": dict(sorted(inj.by_category.items())),
            "faults_planned": len(self.plan),
            "faults_unobserved": inj.unobserved,
            "faults_not_injected": inj.not_injected,
            "jobs": sched.jobs,
            "job_failures": sched.failures,
            "job_restarts": sched.restarts,
            "migrations": sched.migrations,
            "lost_gpu_hours": round(sched.lost_gpu_hours, 2),
        }
