"""Wide symptom shapes (``--shapes wide``): each fault's shape drawn from documented ranges.

The template shapes (``symptoms``) give every fault of a category one look, the one the detectors
were written from. Real faults vary: a precursor ramps in seconds or hours, arrives in bursts or
as a trickle, or is missing; the kernel's XID line arrives after the samples already show the
GPU gone; a rack's GPUs warm unevenly; a node takes minutes to be declared down. Here each fault
draws its shape from ``RANGES`` and ``SHARES`` (quoted by
docs/faults.md#symptom-shapes-template-and-wide), from the fault stream of the seed, so a seed
stays deterministic.

The job-level categories (``software``, ``sdc``, ``nccl_hang``) have no hardware shape and keep
the template; so does the leaf-switch variant of ``network`` (every port down at once is what a
dead switch does). The steps reuse the template's building blocks where they are the same.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import numpy as np

from fleetlog.generators.faults import Fault
from fleetlog.generators.shapes import Range, chance
from fleetlog.generators.symptoms import (
    _HBM_XIDS,
    CUDA_FAILURE,
    ECC_FAILURE,
    GSP_FAILURE,
    MAINTENANCE_FAILURE,
    NETWORK_FAILURE,
    NODE_FAILURE,
    _bring_up,
    _leaf_down,
    _went_down,
    repair_time,
)
from fleetlog.generators.telemetry import Overlay
from fleetlog.generators.world import World
from fleetlog.ingest import contract as c

RANGES: Final[dict[str, dict[str, Range]]] = {
    "gpu_hw": {
        "crc_lead": Range(0.2, 30, "min", 60),  # NVLink CRC errors before XID 74
        "crc_start": Range(30, 3600, "per hour"),
        "crc_end": Range(600, 100000, "per hour"),
        "pcie_lead": Range(0.5, 10, "min", 60),  # PCIe replays before some XID 79
        "xid_late": Range(10, 180, "s"),  # the XID line after the samples show it
        "fail_after": Range(1, 120, "s"),
    },
    "gpu_hbm": {
        "lead": Range(2, 120, "min", 60),
        "sbe_start": Range(10, 1000, "per hour"),
        "sbe_end": Range(200, 30000, "per hour"),
        "pending_at": Range(20, 95, "% of the lead", 0.01),
        "fail_after": Range(0.5, 60, "s"),
    },
    "gpu_sram": {
        "lead": Range(0.5, 30, "min", 60),
        "errors_start": Range(10, 1000, "per hour"),
        "errors_end": Range(200, 20000, "per hour"),
        "fail_after": Range(0.5, 60, "s"),
    },
    "gpu_gsp": {
        "idle_lag": Range(0, 60, "s"),  # the GPU goes idle after the XID
        "fail_after": Range(5, 180, "s"),
    },
    "gpu_thermal": {
        "ramp": Range(1, 40, "min", 60),
        "rise": Range(6, 35, "°C"),
        "clock_drop": Range(10, 50, "%", 0.01),
        "throttle_lag": Range(0, 5, "min", 60),  # throttling after the ramp's end
    },
    "cooling": {
        "ramp": Range(5, 60, "min", 60),
        "rise": Range(4, 25, "°C"),
        "spread": Range(50, 100, "% of the rise", 0.01),  # each node's share of the rise
        "clock_drop": Range(5, 30, "%", 0.01),
        "throttle_lag": Range(0, 10, "min", 60),
    },
    "network": {
        "lead": Range(0.2, 60, "min", 60),  # cable: errors before the first flap
        "symbol_start": Range(10, 1000, "per hour"),
        "symbol_end": Range(100, 50000, "per hour"),
        "flaps": Range(1, 8, "flaps"),
        "down": Range(15, 120, "s"),  # each flap
        "slowdown": Range(0, 50, "%", 0.01),  # of the attached job, while the errors last
    },
    "nic": {
        "lead": Range(1, 120, "min", 60),
        "errors_start": Range(5, 600, "per hour"),
        "errors_end": Range(18, 20000, "per hour"),
        "fail_after": Range(5, 60, "s"),
    },
    "host_maintenance": {"down_after": Range(0.5, 15, "min", 60)},
    "host_hw": {
        "down_after": Range(0.5, 10, "min", 60),  # node.went_down after the samples stop
        "fail_after": Range(10, 120, "s"),
    },
    "rack_power": {"stagger": Range(0, 30, "s")},  # the nodes go dark within it
    "storage": {"slowdown": Range(2, 30, "×")},
}
SHARES: Final = {
    "precursor_missing": 0.25,  # an ECC/CRC/error precursor that never shows
    "bursty": 0.35,  # a precursor that comes in 2-6 bursts instead of a ramp
    "xid_late": 0.3,  # the XID line after the samples show the GPU gone, idle or its DBE
    "xid79_pcie_precursor": 0.3,  # PCIe replays before a GPU falls off the bus
    "remap_pending_missing": 0.3,
    "cable_recovery_errors": 0.6,  # a flapping cable also counts link error recoveries
    "hw_thermal": 0.4,  # a thermal fault sets the HW thermal bit (else SW thermal only)
}
BURSTS: Final = (2, 6)
BURST_SCRAPES: Final = (1, 4)


def _us(seconds: float) -> int:
    return round(seconds * 1_000_000)


def _draw(sim: World, category: str, knob: str) -> float:
    return RANGES[category][knob].draw(sim.rng_fault)


def _index(*items: int) -> np.ndarray[tuple[int], np.dtype[np.intp]]:
    return np.asarray(items, dtype=np.intp)


def _note(f: Fault, text: str) -> None:
    """Add to the truth's ``detail`` how this fault was shaped (``xid48: no precursor, ...``)."""
    f.detail = f"{f.detail}, {text}" if f.detail else f"{f.variant}: {text}"


def _repair(sim: World, f: Fault, t_us: int) -> int:
    return repair_time(sim, f, t_us)  # the trace-fitted repair times (generators/faults.py)


def _lead(sim: World, category: str, knob: str) -> int:
    """A precursor's duration, cut to half the window left (never below the range's low end)."""
    r = RANGES[category][knob]
    room = (sim.config.end_us - sim.now_us) / 1e6 * 0.5
    hi = max(r.lo * r.scale, min(r.hi * r.scale, room))
    return _us(float(sim.rng_fault.uniform(r.lo * r.scale, hi)))


def _precursor(sim: World, f: Fault, kind: str, column: str, index: int, t1: int,
               per_hour: tuple[float, float]) -> int:
    """A counter rising on one GPU (``counter``) or port (``port_counter``) from the next scrape
    to ``t1``: a ramp (slow rates skip scrapes) or 2-6 bursts; returns its first scrape."""
    sim_dt = sim.config.interval_s
    t0 = sim.next_tick(sim.now_us)
    start, end = (rate * sim_dt / 3600.0 for rate in per_hour)
    where = _index(index)
    # the first scrape always shows one: the onset the truth names
    sim.tel.add(Overlay(f, kind, where, t0, t0, column=column))
    if chance(sim.rng_fault, SHARES["bursty"]) and t1 > t0:
        count = int(sim.rng_fault.integers(BURSTS[0], BURSTS[1] + 1))
        starts = np.sort(sim.rng_fault.integers(t0, t1, size=count))
        for at in starts.tolist():
            tb = sim.next_tick(int(at))
            scrapes = int(sim.rng_fault.integers(BURST_SCRAPES[0], BURST_SCRAPES[1] + 1))
            rate = max(1.0, end * 5)
            sim.tel.add(Overlay(f, kind, where, tb, tb + _us(scrapes * sim_dt), column=column,
                                rate0=rate, rate1=rate))
        shape = f"{count} bursts"
    else:
        sim.tel.add(Overlay(f, kind, where, t0, t1, column=column, rate0=start, rate1=end,
                            floor=0))
        shape = f"{per_hour[0]:.0f} -> {per_hour[1]:.0f} per hour"
    _note(f, f"{column} {shape} over {(t1 - t0) / 6e7:.1f} min")
    f.symptom(t0)
    return t0


def _fatal(sim: World, f: Fault, codes: list[int], failure: tuple[int, str], fail_after_s: float,
           end_us: int, *, absent: bool = False, idle: bool = False, dbe: bool = False,
           remap_failure: bool = False) -> None:
    """Like the template's: the XID (and a DBE), the GPU gone or idle, the node drained, the job
    failing, the repair; but the XID line may come late when the samples already show it."""
    tel, sched, gpu, node = sim.tel, sim.sched, f.gpu, f.node
    tel.clear(f, "counter")
    visible = absent or idle or dbe
    late = visible and chance(sim.rng_fault, SHARES["xid_late"])
    lag = _us(RANGES["gpu_hw"]["xid_late"].draw(sim.rng_fault)) if late else 0
    if dbe:
        tel.bump("ecc_dbe_vol_total", [gpu])
    if absent:
        tel.set_gpu_ok(gpu, False)
    if idle:
        tel.forced_idle[gpu] += 1
    if late:
        f.symptom(sim.next_tick(sim.now_us))
        f.touch(sim.topo.gpu_entity(gpu))
        _note(f, f"XID line {lag / 1e6:.0f} s late")

    def xids() -> None:
        sim.xid(gpu, codes[0], fault=f)
        if len(codes) > 1:
            def second() -> None:
                sim.xid(gpu, codes[1], fault=f)
                if remap_failure:
                    tel.remap_failure[gpu] = 1.0

            sim.after(_us(float(sim.rng_fault.uniform(1, 5))), second)

    sim.after(lag, xids)
    sched.drain([node])
    code, reason = failure
    sim.after(_us(fail_after_s), lambda: sched.fail_on([node], code, reason, f))

    def repair() -> None:
        if absent:
            tel.set_gpu_ok(gpu, True)
        if idle:
            tel.forced_idle[gpu] -= 1
        tel.remap_pending[gpu] = 0.0
        tel.remap_failure[gpu] = 0.0
        tel.clear(f)
        sched.undrain([node])
        sim.injector.finish(f)

    sim.at(max(end_us, sim.now_us + lag + 1), repair)


def _then_fatal(sim: World, f: Fault, t_xid: int, action: Callable[[int], None]) -> None:
    end = _repair(sim, f, t_xid)
    f.end_us = end
    sim.at(t_xid, lambda: action(end))


def gpu_hw(sim: World, f: Fault) -> None:
    sim.injector.hold_nodes(f, [f.node])
    fail_after = _draw(sim, "gpu_hw", "fail_after")
    if f.variant == "nvlink_xid74":
        t_xid = sim.now_us
        if chance(sim.rng_fault, SHARES["precursor_missing"]):
            _note(f, "no precursor")
        else:
            t_xid = sim.next_tick(sim.now_us) + _lead(sim, "gpu_hw", "crc_lead")
            _precursor(sim, f, "counter", "nvlink_crc_flit_errors", f.gpu, t_xid,
                       (_draw(sim, "gpu_hw", "crc_start"), _draw(sim, "gpu_hw", "crc_end")))
        _then_fatal(sim, f, t_xid, lambda end: _fatal(sim, f, [74], CUDA_FAILURE, fail_after,
                                                      end))
        return
    code = {"xid79": 79, "xid62": 62, "xid45": 45}[f.variant]
    t_xid = sim.now_us
    if code == 79 and chance(sim.rng_fault, SHARES["xid79_pcie_precursor"]):
        t_xid = sim.next_tick(sim.now_us) + _lead(sim, "gpu_hw", "pcie_lead")
        _precursor(sim, f, "counter", "pcie_replays", f.gpu, t_xid, (60.0, 3600.0))
    _then_fatal(sim, f, t_xid, lambda end: _fatal(sim, f, [code], CUDA_FAILURE, fail_after, end,
                                                  absent=code == 79, idle=code != 79))


def _ecc_then_xid(sim: World, f: Fault, column: str, knobs: tuple[str, str, str],
                  pending: bool) -> int:
    """The ECC precursor (unless missing) and, for HBM, the remap-pending flag; the XID time."""
    category = f.category
    if chance(sim.rng_fault, SHARES["precursor_missing"]):
        _note(f, "no precursor")
        return sim.now_us
    lead, start, end = knobs
    t0 = sim.next_tick(sim.now_us)
    t_xid = t0 + _lead(sim, category, lead)
    _precursor(sim, f, "counter", column, f.gpu, t_xid,
               (_draw(sim, category, start), _draw(sim, category, end)))
    if pending and chance(sim.rng_fault, SHARES["remap_pending_missing"]):
        _note(f, "no remap pending")
    elif pending:
        share = _draw(sim, category, "pending_at")

        def set_pending() -> None:
            sim.tel.remap_pending[f.gpu] = 1.0

        sim.at(t0 + round((t_xid - t0) * share), set_pending)
    return t_xid


def gpu_hbm(sim: World, f: Fault) -> None:
    sim.injector.hold_nodes(f, [f.node])
    t_xid = _ecc_then_xid(sim, f, "ecc_sbe_vol_total", ("lead", "sbe_start", "sbe_end"), True)
    fail_after = _draw(sim, "gpu_hbm", "fail_after")
    _then_fatal(sim, f, t_xid, lambda end: _fatal(
        sim, f, _HBM_XIDS[f.variant], ECC_FAILURE, fail_after, end, dbe=True,
        remap_failure=f.variant == "xid63_64"))


def gpu_sram(sim: World, f: Fault) -> None:
    sim.injector.hold_nodes(f, [f.node])
    t_xid = _ecc_then_xid(sim, f, "sram_ecc_total", ("lead", "errors_start", "errors_end"),
                          False)
    fail_after = _draw(sim, "gpu_sram", "fail_after")
    code = 94 if f.variant == "xid94" else 95
    _then_fatal(sim, f, t_xid, lambda end: _fatal(sim, f, [code], ECC_FAILURE, fail_after, end))


def gpu_gsp(sim: World, f: Fault) -> None:
    """XID 119/120 at once; the GPU goes idle a drawn lag later; the job fails later still."""
    tel, sched, gpu, node = sim.tel, sim.sched, f.gpu, f.node
    sim.injector.hold_nodes(f, [node])
    f.end_us = _repair(sim, f, sim.now_us)
    sim.xid(gpu, 119 if f.variant == "xid119" else 120, fault=f)
    sched.drain([node])

    def go_idle() -> None:
        tel.forced_idle[gpu] += 1

    sim.after(_us(_draw(sim, "gpu_gsp", "idle_lag")), go_idle)
    code, reason = GSP_FAILURE
    sim.after(_us(_draw(sim, "gpu_gsp", "fail_after")),
              lambda: sched.fail_on([node], code, reason, f))

    def repair() -> None:
        tel.forced_idle[gpu] = max(0, int(tel.forced_idle[gpu]) - 1)
        tel.clear(f)
        sched.undrain([node])
        sim.injector.finish(f)

    sim.at(max(f.end_us, sim.now_us + _us(61)), repair)


def _heat(sim: World, f: Fault, groups: list[list[int]], category: str, bits: int) -> None:
    """Each group of GPUs warms by its share of the rise; throttling a drawn lag after."""
    t0 = sim.next_tick(sim.now_us)
    t1 = t0 + _lead(sim, category, "ramp")
    rise = _draw(sim, category, "rise")
    spread = RANGES[category].get("spread")
    for gpus in groups:
        share = spread.draw(sim.rng_fault) if spread is not None else 1.0
        sim.tel.add(Overlay(f, "temp", np.asarray(gpus, dtype=np.intp), t0, t1,
                            value=rise * share))
    t_throttle = sim.next_tick(t1 + _us(_draw(sim, category, "throttle_lag")))
    clock = _draw(sim, category, "clock_drop")
    every = np.asarray([g for gpus in groups for g in gpus], dtype=np.intp)
    sim.tel.add(Overlay(f, "throttle", every, t_throttle, t_throttle, bits=bits,
                        clock=1.0 - clock))
    f.symptom(t0)
    f.detail = (f"{f.variant}: +{rise:.1f} °C over {(t1 - t0) / 6e7:.0f} min, throttling "
                f"{(t_throttle - t1) / 1e6:.0f} s later (bits {bits:#x}, clock -{clock:.0%})")
    f.end_us = _repair(sim, f, t_throttle)

    def repair() -> None:
        sim.tel.clear(f)
        sim.injector.finish(f)

    sim.at(f.end_us, repair)


def gpu_thermal(sim: World, f: Fault) -> None:
    sim.injector.hold_nodes(f, [f.node])
    bits = c.THROTTLE_SW_THERMAL
    if chance(sim.rng_fault, SHARES["hw_thermal"]):
        bits = c.THROTTLE_HW_THERMAL | (c.THROTTLE_SW_THERMAL if chance(sim.rng_fault, 0.5)
                                        else 0)
    _heat(sim, f, [[f.gpu]], "gpu_thermal", bits)


def cooling(sim: World, f: Fault) -> None:
    nodes = list(sim.topo.rack_nodes(f.rack))
    sim.injector.busy_racks.add(f.rack)
    sim.injector.hold_nodes(f, nodes)
    gpn = sim.topo.gpus_per_node
    groups = [list(range(n * gpn, (n + 1) * gpn)) for n in nodes]
    f.touch(*(sim.topo.gpu_entity(g) for gpus in groups for g in gpus))
    _heat(sim, f, groups, "cooling", c.THROTTLE_SW_THERMAL)


def network(sim: World, f: Fault) -> None:
    if f.variant == "switch":
        _leaf_down(sim, f)
        return
    tel, sched, port, node = sim.tel, sim.sched, f.port, f.node
    sim.injector.hold_nodes(f, [node])
    f.touch(sim.topo.nic_entity(node, f.gpu % sim.topo.gpus_per_node))
    t0 = sim.next_tick(sim.now_us)
    first_flap = sim.now_us
    if chance(sim.rng_fault, SHARES["precursor_missing"]):
        _note(f, "no precursor")
    else:
        first_flap = t0 + _lead(sim, "network", "lead")
        rates = (_draw(sim, "network", "symbol_start"), _draw(sim, "network", "symbol_end"))
        _precursor(sim, f, "port_counter", "symbol_error", port, first_flap, rates)
        if chance(sim.rng_fault, SHARES["cable_recovery_errors"]):
            _precursor(sim, f, "port_counter", "link_error_recovery", port, first_flap,
                       (rates[0] / 20, rates[1] / 20))
        slowdown = _draw(sim, "network", "slowdown")
        if slowdown > 0.01:
            tel.add(Overlay(f, "slow", _index(), t0, t0, clock=1.0 / (1.0 + slowdown),
                            nodes=(node,)))
    down_us = _us(max(_draw(sim, "network", "down"), 1.5 * sim.config.interval_s))
    flaps = [first_flap]
    for _ in range(round(_draw(sim, "network", "flaps")) - 1):
        flaps.append(flaps[-1] + down_us + _us(float(sim.rng_fault.uniform(10, 120))))
    _note(f, f"{len(flaps)} flaps of {down_us / 1e6:.0f} s")
    f.end_us = _repair(sim, f, flaps[-1])

    def down(first: bool, last: bool) -> None:
        tel.port_state[port] = c.PORT_STATE_DOWN
        tel.bump_port("link_downed", [port])
        f.symptom(sim.next_tick(sim.now_us))
        if first:
            tel.clear(f, "slow")
            sched.drain([node])
            code, reason = NETWORK_FAILURE
            sim.after(_us(float(sim.rng_fault.uniform(5, 20))),
                      lambda: sched.fail_on([node], code, reason, f))
        if last:
            tel.clear(f, "port_counter")
        else:
            sim.after(down_us, up)

    def up() -> None:
        tel.port_state[port] = c.PORT_STATE_ACTIVE
        tel.bump_port("link_error_recovery", [port])

    for i, t in enumerate(flaps):
        sim.at(t, lambda i=i: down(i == 0, i == len(flaps) - 1))  # type: ignore[misc]

    def repair() -> None:
        tel.port_state[port] = c.PORT_STATE_ACTIVE
        tel.clear(f)
        sched.undrain([node])
        sim.injector.finish(f)

    sim.at(f.end_us, repair)


def nic(sim: World, f: Fault) -> None:
    tel, sched, port, node = sim.tel, sim.sched, f.port, f.node
    sim.injector.hold_nodes(f, [node])
    f.touch(sim.topo.link_entity(port))
    t_down = sim.now_us
    if chance(sim.rng_fault, SHARES["precursor_missing"]):
        _note(f, "no precursor")
    else:
        t_down = sim.next_tick(sim.now_us) + _lead(sim, "nic", "lead")
        _precursor(sim, f, "port_counter", "rcv_errors", port, t_down,
                   (_draw(sim, "nic", "errors_start"), _draw(sim, "nic", "errors_end")))
    f.end_us = _repair(sim, f, t_down)
    fail_after = _us(_draw(sim, "nic", "fail_after"))

    def down() -> None:
        tel.clear(f)
        tel.port_state[port] = c.PORT_STATE_DOWN
        tel.bump_port("link_downed", [port])
        f.symptom(sim.next_tick(sim.now_us))
        sched.drain([node])
        code, reason = NETWORK_FAILURE
        sim.after(fail_after, lambda: sched.fail_on([node], code, reason, f))

    def repair() -> None:
        tel.port_state[port] = c.PORT_STATE_ACTIVE
        sched.undrain([node])
        sim.injector.finish(f)

    sim.at(t_down, down)
    sim.at(f.end_us, repair)


def host_maintenance(sim: World, f: Fault) -> None:
    node = f.node
    sim.injector.hold_nodes(f, [node])
    sim.emit(c.NodeMaintenanceStarted(node=sim.topo.node_names[node],
                                      reason="unplanned maintenance"))
    f.symptom(sim.now_us)
    sim.sched.drain([node])
    code, reason = MAINTENANCE_FAILURE
    sim.after(_us(float(sim.rng_fault.uniform(5, 30))),
              lambda: sim.sched.fail_on([node], code, reason, f))
    t_down = sim.now_us + _us(_draw(sim, "host_maintenance", "down_after"))
    sim.at(t_down, _went_down(sim, f, node, "reboot"))
    f.end_us = max(_repair(sim, f, sim.now_us), t_down + _us(120))
    _bring_up(sim, f, [node], maintenance=True)


def host_hw(sim: World, f: Fault) -> None:
    node = f.node
    sim.injector.hold_nodes(f, [node])
    sim.tel.set_node_up(node, False)
    sim.sched.drain([node])
    first_missing = sim.next_tick(sim.now_us)
    f.symptom(first_missing)
    code, reason = NODE_FAILURE
    sim.after(_us(_draw(sim, "host_hw", "fail_after")),
              lambda: sim.sched.fail_on([node], code, reason, f))
    t_down = first_missing + _us(_draw(sim, "host_hw", "down_after"))
    sim.at(t_down, _went_down(sim, f, node, "unreachable"))
    f.end_us = _repair(sim, f, t_down)
    _bring_up(sim, f, [node])


def rack_power(sim: World, f: Fault) -> None:
    """The rack's nodes go dark within a drawn stagger (one scrape or several)."""
    nodes = list(sim.topo.rack_nodes(f.rack))
    sim.injector.busy_racks.add(f.rack)
    sim.injector.hold_nodes(f, nodes)
    sim.sched.drain(nodes)
    f.touch(*(sim.topo.node_entity(n) for n in nodes))
    stagger = _draw(sim, "rack_power", "stagger")
    for node in nodes:
        def dark(node: int = node) -> None:
            sim.tel.set_node_up(node, False)
            f.symptom(sim.next_tick(sim.now_us))

        at = sim.now_us + _us(float(sim.rng_fault.uniform(0, stagger)))
        sim.at(at, dark)
        sim.at(at + _us(float(sim.rng_fault.uniform(1, 5))),
               _went_down(sim, f, node, "power loss"))
    code, reason = NODE_FAILURE
    sim.after(_us(stagger + float(sim.rng_fault.uniform(10, 40))),
              lambda: sim.sched.fail_on(nodes, code, reason, f))
    f.end_us = _repair(sim, f, sim.now_us + _us(stagger))
    _bring_up(sim, f, nodes, stagger_s=60)


def storage(sim: World, f: Fault) -> None:
    factor = _draw(sim, "storage", "slowdown")
    sim.sched.storage[f.vc] = (factor, f)
    f.detail = f"checkpoint writes {factor:.1f}x slower on {sim.topo.vc_names[f.vc]}"
    f.end_us = _repair(sim, f, sim.now_us)

    def repair() -> None:
        sim.sched.storage.pop(f.vc, None)
        sim.injector.finish(f)

    sim.at(f.end_us, repair)


SYMPTOMS: Final[dict[str, Callable[[World, Fault], None]]] = {
    "gpu_hw": gpu_hw, "gpu_hbm": gpu_hbm, "gpu_sram": gpu_sram, "gpu_gsp": gpu_gsp,
    "gpu_thermal": gpu_thermal, "cooling": cooling, "network": network, "nic": nic,
    "host_maintenance": host_maintenance, "host_hw": host_hw, "rack_power": rack_power,
    "storage": storage,
}
assert set(SYMPTOMS) == set(RANGES)
