"""Confounders: things that look like faults and are not (the ``quiet_confounders`` scenario).

A detector must stay silent on them, so none is in the truth (no ``fault.injected``). What the
scenario adds on top of what every run already has (planned checkpoints: util and power fall
for minutes; jobs ending and new ones starting):

- benign XIDs 13, 31 and 43 (NVIDIA's catalog: RESTART_APP, RESTART_APP, IGNORE: application
  errors, not hardware) many times more often than the background, some on every GPU of a node
  at once (an application fault hits all its ranks);
- isolated counter blips: a few single-bit ECC errors, PCIe replays, NVLink CRC errors, symbol
  errors or receive errors, once, on one part, never rising again;
- a whole rack warming a few degrees (inlet air), held for a while, then cooling back: every
  GPU of the rack together, no throttling.

Rates and sizes are ``RANGES`` (docs/faults.md#confounders quotes them), drawn from a random
stream of their own (the seed's sixth), so the other streams, and therefore the rest of the run,
are those of ``quiet`` with the same seed.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from fleetlog.generators.shapes import Range
from fleetlog.generators.telemetry import Overlay
from fleetlog.generators.world import World

RANGES: Final[dict[str, Range]] = {
    "xid_rate": Range(0.2, 1.0, "per node-day"),  # single benign XIDs
    "xid_node_burst_rate": Range(0.05, 0.2, "per node-day"),  # one XID on all GPUs of a node
    "blip_rate": Range(0.5, 2.0, "per node-day"),  # isolated counter blips
    "warming_rate": Range(0.5, 1.0, "per rack-day"),
    "warming_rise": Range(2, 5, "°C"),
    "warming_ramp": Range(10, 30, "min", 60),
    "warming_hold": Range(20, 90, "min", 60),
}
BENIGN_XIDS: Final = (13, 31, 43)
# (column, on a port?, size of the blip: at most this many)
BLIPS: Final = (("ecc_sbe_vol_total", False, 2), ("pcie_replays", False, 8),
                ("nvlink_crc_flit_errors", False, 10), ("symbol_error", True, 30),
                ("rcv_errors", True, 3))
STREAM: Final = 5  # spawn key of the random stream: the simulator spawns streams 0..4


class _Warming:
    """Owner of a rack warming's overlay (not a fault)."""


def schedule(sim: World) -> None:
    """Schedule every confounder of the run (at least one of each kind)."""
    config, topo = sim.config, sim.topo
    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(STREAM,)))
    span = config.end_us - config.start_us
    days = span / 8.64e10

    def count(rate: str, units: int) -> int:
        return max(1, int(rng.poisson(RANGES[rate].draw(rng) * units * days)))

    def when() -> int:
        return config.start_us + int(rng.integers(span // 20, span * 9 // 10))

    gpn = topo.gpus_per_node
    for _ in range(count("xid_rate", topo.n_nodes)):
        gpu, code = int(rng.integers(topo.n_gpus)), BENIGN_XIDS[int(rng.integers(3))]
        sim.at(when(), lambda gpu=gpu, code=code: _xid(sim, [gpu], code))  # type: ignore[misc]
    for _ in range(count("xid_node_burst_rate", topo.n_nodes)):
        node, code = int(rng.integers(topo.n_nodes)), BENIGN_XIDS[int(rng.integers(2))]
        gpus = list(range(node * gpn, (node + 1) * gpn))
        sim.at(when(), lambda gpus=gpus, code=code: _xid(sim, gpus, code))  # type: ignore[misc]
    for _ in range(count("blip_rate", topo.n_nodes)):
        column, on_port, most = BLIPS[int(rng.integers(len(BLIPS)))]
        size = float(rng.integers(1, most + 1))
        if on_port:
            node, rail = int(rng.integers(topo.n_nodes)), int(rng.integers(gpn))
            port = int(topo.down_port[node, rail])
            sim.at(when(), lambda c=column, p=port, k=size:  # type: ignore[misc]
                   sim.tel.bump_port(c, [p], k))
        else:
            gpu = int(rng.integers(topo.n_gpus))
            sim.at(when(), lambda c=column, g=gpu, k=size:  # type: ignore[misc]
                   sim.tel.bump(c, [g], k))
    for _ in range(count("warming_rate", topo.n_racks)):
        rack = int(rng.integers(topo.n_racks))
        rise, ramp = RANGES["warming_rise"].draw(rng), RANGES["warming_ramp"].draw(rng)
        hold = RANGES["warming_hold"].draw(rng)
        sim.at(when(), lambda r=rack, v=rise, a=ramp, h=hold:  # type: ignore[misc]
               _warm(sim, r, v, a, h))


def _xid(sim: World, gpus: list[int], code: int) -> None:
    """A benign XID on each of ``gpus`` that is reporting and runs a job (it is the job's)."""
    gpn = sim.topo.gpus_per_node
    for gpu in gpus:
        slot = int(sim.sched.node_job[gpu // gpn])
        if sim.tel.present[gpu] and slot >= 0:
            sim.xid(gpu, code, pid=sim.sched.jobs[slot].pid)


def _warm(sim: World, rack: int, rise: float, ramp_s: float, hold_s: float) -> None:
    """Every GPU of the rack warms by ``rise`` over ``ramp_s``, holds, then cools back."""
    nodes = sim.topo.rack_nodes(rack)
    gpn = sim.topo.gpus_per_node
    gpus = np.arange(nodes.start * gpn, nodes.stop * gpn, dtype=np.intp)
    owner = _Warming()
    t0 = sim.next_tick(sim.now_us)
    t1 = t0 + round(ramp_s * 1e6)
    sim.tel.add(Overlay(owner, "temp", gpus, t0, t1, value=rise))
    sim.at(t1 + round(hold_s * 1e6), lambda: sim.tel.clear(owner))
