"""Fail-slow (gray) faults: a part runs slow and no error counter or XID names it.

Each kind belongs to the category of the part at fault (../shared/DESIGN.md, docs/faults.md):
a GPU running slow is ``gpu_hw``, a node held at a power cap or with every NIC port slow
``host_hw``, a link at reduced bandwidth ``network``. What marks them is that only a comparison
with peers shows them: the other GPUs of the node, the other ranks of the job, the other ports
of the node, the same rail of the job's other nodes. The truth record's ``detail`` starts with
the kind (``clock_drop: ...``) and its ``scenario`` is the ``failslow...`` scenario that
injected it.

Every magnitude, ramp and lag is drawn per fault from ``RANGES`` (the numbers docs/faults.md
quotes), from the fault stream of the seed. The slowed job is the straggler effect: a
synchronous job runs at the pace of its slowest rank, so one slow part slows all its ranks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import numpy as np

from fleetlog.generators.faults import FAILSLOW_KINDS, Fault
from fleetlog.generators.shapes import Range, chance
from fleetlog.generators.steps import repair_time
from fleetlog.generators.telemetry import Overlay
from fleetlog.generators.world import World
from fleetlog.ingest import contract as c

RANGES: Final[dict[str, dict[str, Range]]] = {
    "clock_drop": {
        "clock_drop": Range(25, 40, "%", 0.01),  # SM clock below its usual value
        "power_drop": Range(25, 40, "%", 0.01),
        "ramp": Range(0, 5, "min", 60),  # from the first lower scrape to the full drop
    },
    "power_cap": {
        "cap": Range(300, 500, "W"),  # every GPU of the node held under it
        "clock_drop": Range(10, 30, "%", 0.01),
        "ramp": Range(0, 1, "min", 60),
    },
    "pcie_degraded": {
        "replays_start": Range(5, 60, "per hour"),
        "replays_end": Range(60, 1200, "per hour"),
        "slowdown": Range(3, 15, "%", 0.01),  # of the job's step time
        "slow_lag": Range(0, 10, "min", 60),  # the slowdown starts after the first replays
    },
    "port_bandwidth": {
        "rate": Range(40, 60, "%", 0.01),  # of its data rate, transmit and receive
        "slowdown": Range(10, 50, "%", 0.01),
    },
    "node_network": {
        # every NIC port of the node, transmit and receive: a PCIe root port or switch trained
        # down a width or speed step (half), or a NIC in a degraded mode
        "rate": Range(40, 65, "%", 0.01),
        "slowdown": Range(10, 50, "%", 0.01),
    },
    "nvlink_bandwidth": {
        "power_drop": Range(10, 25, "%", 0.01),  # SMs stall on NVLink; the clock stays up
        "slowdown": Range(10, 40, "%", 0.01),
        "crc_errors": Range(2, 30, "per hour"),  # a trickle, in a drawn share of faults
    },
}
NVLINK_CRC_SHARE: Final = 0.5  # share of NVLink bandwidth faults that also trickle CRC errors
POWER_CAP_BITS: Final = (0, c.THROTTLE_POWER_BRAKE, c.THROTTLE_HW_SLOWDOWN,
                         c.THROTTLE_HW_SLOWDOWN | c.THROTTLE_POWER_BRAKE)


def _us(seconds: float) -> int:
    return round(seconds * 1_000_000)


def _draw(sim: World, kind: str, knob: str) -> float:
    return RANGES[kind][knob].draw(sim.rng_fault)


def _per_scrape(sim: World, per_hour: float) -> float:
    return per_hour * sim.config.interval_s / 3600.0


def _gpus(*items: int) -> np.ndarray[tuple[int], np.dtype[np.intp]]:
    return np.asarray(items, dtype=np.intp)


def _start(sim: World, f: Fault, nodes: list[int]) -> int:
    """Hold the nodes, mark the first symptom at the next scrape, schedule the repair."""
    sim.injector.hold_nodes(f, nodes)
    t0 = sim.next_tick(sim.now_us)
    f.symptom(t0)
    f.end_us = repair_time(sim, f, t0)  # the trace-fitted repair times (generators/faults.py)

    def repair() -> None:
        sim.tel.clear(f)
        sim.injector.finish(f)

    sim.at(f.end_us, repair)
    return t0


def clock_drop(sim: World, f: Fault) -> None:
    """One GPU's SM clock and power fall together, no throttle bit, no XID; util stays high."""
    t0 = _start(sim, f, [f.node])
    clock, power = _draw(sim, "clock_drop", "clock_drop"), _draw(sim, "clock_drop", "power_drop")
    ramp = _draw(sim, "clock_drop", "ramp")
    sim.tel.add(Overlay(f, "throttle", _gpus(f.gpu), t0, t0 + _us(ramp), clock=1.0 - clock,
                        power=1.0 - power))
    f.detail = (f"clock_drop: SM clock -{clock:.0%}, power -{power:.0%} over {ramp / 60:.1f} "
                "min, no throttle bit")


def power_cap(sim: World, f: Fault) -> None:
    """Every GPU of the node held under a lower power cap and clock; a throttle bit or not."""
    t0 = _start(sim, f, [f.node])
    gpn = sim.topo.gpus_per_node
    gpus = np.arange(f.node * gpn, (f.node + 1) * gpn, dtype=np.intp)
    f.touch(*(sim.topo.gpu_entity(int(g)) for g in gpus))
    cap, clock = _draw(sim, "power_cap", "cap"), _draw(sim, "power_cap", "clock_drop")
    bits = POWER_CAP_BITS[int(sim.rng_fault.integers(len(POWER_CAP_BITS)))]
    ramp = _draw(sim, "power_cap", "ramp")
    sim.tel.add(Overlay(f, "throttle", gpus, t0, t0 + _us(ramp), clock=1.0 - clock,
                        cap_w=cap, bits=bits))
    f.detail = f"power_cap: {cap:.0f} W, SM clock -{clock:.0%}, throttle bits {bits:#x}"


def pcie_degraded(sim: World, f: Fault) -> None:
    """PCIe replays rising on one GPU; the job slows modestly, a drawn lag later."""
    t0 = _start(sim, f, [f.node])
    start = _per_scrape(sim, _draw(sim, "pcie_degraded", "replays_start"))
    end = _per_scrape(sim, _draw(sim, "pcie_degraded", "replays_end"))
    assert f.end_us is not None
    sim.tel.add(Overlay(f, "counter", _gpus(f.gpu), t0, f.end_us, column="pcie_replays",
                        rate0=start, rate1=end, floor=0))
    slowdown, lag = _draw(sim, "pcie_degraded", "slowdown"), _draw(sim, "pcie_degraded",
                                                                   "slow_lag")
    t_slow = sim.next_tick(t0 + _us(lag))
    sim.tel.add(Overlay(f, "slow", _gpus(), t_slow, t_slow, clock=1.0 / (1.0 + slowdown),
                        nodes=(f.node,)))
    f.detail = (f"pcie_degraded: replays {start:.2f} -> {end:.2f} per scrape, job +{slowdown:.0%}"
                f" after {lag / 60:.1f} min")


def port_bandwidth(sim: World, f: Fault) -> None:
    """One port's transmit and receive data rates fall to about half, no error counter."""
    t0 = _start(sim, f, [f.node])
    rail = f.gpu % sim.topo.gpus_per_node
    f.touch(sim.topo.nic_entity(f.node, rail))
    rate, slowdown = _draw(sim, "port_bandwidth", "rate"), _draw(sim, "port_bandwidth",
                                                                 "slowdown")
    sim.tel.add(Overlay(f, "port_rate", _gpus(f.port), t0, t0, value=rate))
    sim.tel.add(Overlay(f, "slow", _gpus(), t0, t0, clock=1.0 / (1.0 + slowdown),
                        nodes=(f.node,)))
    f.detail = f"port_bandwidth: data rate {rate:.0%} of normal, job +{slowdown:.0%}, no errors"


def node_network(sim: World, f: Fault) -> None:
    """Every NIC port of one node at the same drawn share of its data rate, no error counter:
    against its own node no port lags, only the same rails of its job's other nodes show it."""
    t0 = _start(sim, f, [f.node])
    rails = range(sim.topo.gpus_per_node)
    ports = np.asarray([sim.topo.down_port[f.node, rail] for rail in rails], dtype=np.intp)
    ports = ports[ports >= 0]
    f.touch(*(sim.topo.nic_entity(f.node, rail) for rail in rails))
    rate, slowdown = _draw(sim, "node_network", "rate"), _draw(sim, "node_network", "slowdown")
    sim.tel.add(Overlay(f, "port_rate", ports, t0, t0, value=rate))
    sim.tel.add(Overlay(f, "slow", _gpus(), t0, t0, clock=1.0 / (1.0 + slowdown),
                        nodes=(f.node,)))
    f.detail = (f"node_network: every NIC port at {rate:.0%} of its data rate, job "
                f"+{slowdown:.0%}, no errors")


def nvlink_bandwidth(sim: World, f: Fault) -> None:
    """One GPU's NVLink runs degraded: its power falls at full clock, the job slows; in some
    faults a trickle of CRC errors far below what precedes an XID 74."""
    t0 = _start(sim, f, [f.node])
    power, slowdown = _draw(sim, "nvlink_bandwidth", "power_drop"), _draw(
        sim, "nvlink_bandwidth", "slowdown")
    sim.tel.add(Overlay(f, "throttle", _gpus(f.gpu), t0, t0, power=1.0 - power))
    sim.tel.add(Overlay(f, "slow", _gpus(), t0, t0, clock=1.0 / (1.0 + slowdown),
                        nodes=(f.node,)))
    crc = ""
    if chance(sim.rng_fault, NVLINK_CRC_SHARE):
        per_hour = _draw(sim, "nvlink_bandwidth", "crc_errors")
        rate = _per_scrape(sim, per_hour)
        assert f.end_us is not None
        sim.tel.add(Overlay(f, "counter", _gpus(f.gpu), t0, f.end_us,
                            column="nvlink_crc_flit_errors", rate0=rate, rate1=rate, floor=0))
        crc = f", {per_hour:.0f} CRC errors per hour"
    f.detail = f"nvlink_bandwidth: power -{power:.0%}, job +{slowdown:.0%}{crc}"


SYMPTOMS: Final[dict[str, Callable[[World, Fault], None]]] = {
    "clock_drop": clock_drop, "power_cap": power_cap, "pcie_degraded": pcie_degraded,
    "port_bandwidth": port_bandwidth, "nvlink_bandwidth": nvlink_bandwidth,
    "node_network": node_network,
}
assert set(SYMPTOMS) == set(FAILSLOW_KINDS) == set(RANGES)
