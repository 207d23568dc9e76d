"""What the parts of the simulator see of it: the world's API, as Protocols.

The parts (the scheduler in ``workload``, the fault steps in ``symptoms``, the ``injector``) act
on the simulated world and on each other through the ``Simulator``, which composes them. Typed
against these Protocols instead of the classes, no part imports the simulator or another part
for its types, so imports go one way, each line importing only from the lines above it:

    config, shapes         parameters; the documented ranges fault shapes are drawn from
    template, wide         the two shapes: the tables of ranges and shares
    topology, batches, sinks
    telemetry, faults      the sampled state; the plan (PlannedFault) and Fault, a data record
    jobs                   Job, a data record, and the job mix
    world                  these Protocols
    steps                  the building blocks of the fault steps
    job_symptoms, network_symptoms, workload
                           the parts, typed against the Protocols
    symptoms               every category's steps (the GPU, host, rack, storage ones here)
    failslow               fail-slow kinds
    confounders            look-alikes of faults that are not faults
    injector               picks targets and runs the symptoms
    simulator              the composition: builds the parts and hands each one itself
    run                    a simulation into a sink

Each Protocol lists only what some part uses; members are read-only properties (the parts read
the clock, the config and the part they call, and never rebind them), which also lets the
implementations hold the concrete types (``Simulator.sched`` is a ``Scheduler``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from fleetlog.generators.config import SimConfig
from fleetlog.generators.faults import Fault
from fleetlog.generators.jobs import Job
from fleetlog.generators.telemetry import Telemetry
from fleetlog.generators.topology import Topology
from fleetlog.ingest import contract as c

NodeArray = np.ndarray[tuple[int], np.dtype[np.int32]]  # one value per node


class JobControl(Protocol):
    """The scheduler (``workload.Scheduler``) as the symptoms and the injector use it: where
    jobs run, and what a fault does to nodes and jobs."""

    @property
    def jobs(self) -> list[Job]: ...  # every job so far, by slot

    @property
    def node_job(self) -> NodeArray: ...  # slot of the job on each node, -1 if none

    @property
    def drained(self) -> NodeArray: ...  # > 0: out of scheduling

    @property
    def storage(self) -> dict[int, tuple[float, Fault]]: ...  # vc -> (slowdown, fault)

    def drain(self, nodes: list[int]) -> None: ...

    def undrain(self, nodes: list[int]) -> None: ...

    def fail(self, job: Job, exit_code: int, reason: str, fault: Fault | None) -> bool: ...

    def fail_on(self, nodes: list[int] | range, exit_code: int, reason: str,
                fault: Fault | None) -> None: ...

    def hang(self, job: Job, fault: Fault, timeout_s: float, exit_code: int,
             reason: str) -> None: ...

    def corrupt(self, job: Job, fault: Fault, mode: str, factor: tuple[float, float],
                reports: tuple[int, int], ramp: int) -> None: ...


class FaultLedger(Protocol):
    """The injector (``injector.Injector``) as the symptoms and the scheduler use it: what is
    held by faults in progress, and when a fault is over."""

    @property
    def busy_leaves(self) -> set[int]: ...

    @property
    def busy_racks(self) -> set[int]: ...

    def hold_nodes(self, fault: Fault, nodes: list[int]) -> None: ...

    def finish(self, fault: Fault, end_us: int | None = None) -> None: ...

    def release_hold(self, fault: Fault) -> None: ...


class World(Protocol):
    """The simulator (``simulator.Simulator``) as its parts see it: the clock and the action
    queue, the event output, the cluster's model and state, the random streams, and the other
    parts."""

    @property
    def config(self) -> SimConfig: ...

    @property
    def topo(self) -> Topology: ...

    @property
    def tel(self) -> Telemetry: ...

    @property
    def tag(self) -> str: ...  # prefix of ids (event and fault ids)

    @property
    def now_us(self) -> int: ...

    # One random stream per concern, so draws added in one part do not shift another.
    @property
    def rng_work(self) -> np.random.Generator: ...

    @property
    def rng_fault(self) -> np.random.Generator: ...

    @property
    def rng_noise(self) -> np.random.Generator: ...

    @property
    def sched(self) -> JobControl: ...

    @property
    def injector(self) -> FaultLedger: ...

    def at(self, t_us: int, action: Callable[[], None]) -> None: ...

    def after(self, delay_us: int, action: Callable[[], None]) -> None: ...

    def emit(self, payload: c.Payload, time_us: int | None = None) -> None: ...

    def next_tick(self, t_us: int) -> int: ...

    def xid(self, gpu: int, code: int, *, fault: Fault | None = None, at: int | None = None,
            pid: int | None = None) -> None: ...
