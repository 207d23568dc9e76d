"""What each fault category does to the telemetry, step by step (docs/faults.md is the contract).

One function per category takes the simulator and a targeted ``Fault``; it schedules the symptoms
(precursor ramps, XIDs, samples stopping, port flaps, job failures), drains what a real scheduler
would drain, and schedules the repair, which undoes everything and reports the fault. Onsets of
sample-borne symptoms are the first scrape that shows them (``sim.next_tick``); event-borne ones
are the event's time. Precursor durations are drawn from the documented ranges, shortened (never
below the range's low end) to fit a short window.

The simulator is seen as a ``world.World`` (with the scheduler and the injector behind it as
``JobControl`` and ``FaultLedger``): this module imports no other part, the injector imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import numpy as np

from fleetlog.generators.faults import REPAIR_CLIP_H, REPAIR_HOURS, REPAIR_LOGNORMAL, Fault
from fleetlog.generators.jobs import Job
from fleetlog.generators.telemetry import Overlay
from fleetlog.generators.world import World
from fleetlog.ingest import contract as c

# Kernel log text per XID (the part after "NVRM: Xid (PCI:...): <code>, pid=..., ").
# A flapping cable: how many more bursts of flaps after the first (equally likely), and the quiet
# between two bursts (the link retrains and runs clean for a while, then flaps again).
CABLE_EXTRA_BURSTS: Final = (0, 0, 1, 2, 3)
CABLE_BURST_GAP_S: Final = (20 * 60.0, 150 * 60.0)

XID_TEXT: Final = {
    13: "Graphics SM Warp Exception on (GPC 1, TPC 2, SM 0): Out Of Range Address",
    31: "Ch 00000010, intr 10000000. MMU Fault: ENGINE GRAPHICS GPCCLIENT_T1_3 faulted @ "
        "0x7f3c_42a00000. Fault is of type FAULT_PDE ACCESS_TYPE_VIRT_READ",
    43: "Ch 00000008",
    45: "Preemptive cleanup, due to previous errors -- Most likely to see when running multiple "
        "cuda applications and hitting a DBE.",
    48: "An uncorrectable double bit error (DBE) has been detected on GPU in the framebuffer at "
        "partition 2, subpartition 0.",
    62: "Internal micro-controller halt (PMU halt)",
    63: "Row Remapper: New row marked for remapping, reset gpu to activate.",
    64: "Row Remapper: Failed to remap row, resetting gpu is required.",
    74: "NVLink: fatal error detected on link 3(0x0, 0x0, 0x10000, 0x0, 0x0, 0x0, 0x0)",
    79: "GPU has fallen off the bus.",
    94: "Contained: SM (0x1). RST: No, D-RST: No",
    95: "Uncontained: FBHUB. RST: Yes, D-RST: No",
    119: "Timeout after 6s of waiting for RPC response from GPU0 GSP! Expected function 76 "
         "(GSP_RM_CONTROL) (0x20801348 0x4).",
    120: "GSP task exception: GSP_TASK_RM hit a fatal error (0x1). Reset the GPU.",
    140: "An uncorrectable ECC error was detected and contained (possible firmware handling "
         "failure) DRAM:-1840, LTC:0, MMU:0, RM:0.",
}

CUDA_FAILURE: Final = (1, "CUDA error: unspecified launch failure")
ECC_FAILURE: Final = (1, "uncorrectable ECC error")
GSP_FAILURE: Final = (1, "GSP RPC timeout")
NETWORK_FAILURE: Final = (1, "NCCL error: remote process exited or there was a network error")
MAINTENANCE_FAILURE: Final = (143, "node drained for maintenance")
NODE_FAILURE: Final = (137, "node failure")
SOFTWARE_FAILURES: Final = {
    "runtime_error": (1, "RuntimeError: expected all tensors to be on the same device"),
    "oom": (1, "OOM: out of memory while allocating activations"),
    "import_error": (1, "ImportError: cannot import name 'fused_rms_norm' from 'kernels'"),
    "segfault": (139, "Segmentation fault (core dumped)"),
}
_HBM_XIDS: Final = {"xid48": [48], "xid63_64": [63, 64], "xid94": [94], "xid95": [95],
                    "xid140": [140]}


def _us(seconds: float) -> int:
    return round(seconds * 1_000_000)


def _between(sim: World, lo_s: float, hi_s: float) -> int:
    return _us(float(sim.rng_fault.uniform(lo_s, hi_s)))


def _lead(sim: World, lo_s: float, hi_s: float) -> int:
    """A precursor's duration: the documented range, cut to half the window left (>= lo_s)."""
    room = (sim.config.end_us - sim.now_us) / 1e6 * 0.5
    return _between(sim, lo_s, max(lo_s, min(hi_s, room)))


def repair_time(sim: World, fault: Fault, t_us: int) -> int:
    if fault.category in REPAIR_HOURS:
        lo, hi = REPAIR_HOURS[fault.category]
        return t_us + _between(sim, lo * 3600, hi * 3600)
    mu, sigma = REPAIR_LOGNORMAL[fault.category]
    hours = min(max(float(sim.rng_fault.lognormal(mu, sigma)), REPAIR_CLIP_H[0]), REPAIR_CLIP_H[1])
    return t_us + _us(hours * 3600)


def _index(*items: int) -> np.ndarray[tuple[int], np.dtype[np.intp]]:
    return np.asarray(items, dtype=np.intp)


def _jitter(sim: World) -> int:
    """Puts an event between two scrapes."""
    return _between(sim, 0.5, sim.config.interval_s - 0.5)


# ---- GPU -------------------------------------------------------------------------------------


def _gpu_fatal(sim: World, f: Fault, codes: list[int], failure: tuple[int, str],
               fail_within_s: tuple[float, float], end_us: int, *, absent: bool = False,
               idle: bool = False, dbe: bool = False, remap_failure: bool = False) -> None:
    """The XID (and a DBE), the GPU gone or idle, the node drained, the job failing, the repair."""
    tel, sched, gpu, node = sim.tel, sim.sched, f.gpu, f.node
    tel.clear(f, "counter")
    if dbe:
        tel.bump("ecc_dbe_vol_total", [gpu])
    sim.xid(gpu, codes[0], fault=f)
    if len(codes) > 1:
        def second() -> None:
            sim.xid(gpu, codes[1], fault=f)
            if remap_failure:
                tel.remap_failure[gpu] = 1.0

        sim.after(_between(sim, 1, 5), second)
    if absent:
        tel.set_gpu_ok(gpu, False)
    if idle:
        tel.forced_idle[gpu] += 1
    sched.drain([node])
    code, reason = failure
    sim.after(_between(sim, *fail_within_s), lambda: sched.fail_on([node], code, reason, f))

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

    sim.at(max(end_us, sim.now_us + 1), repair)


def _counter_then_xid(sim: World, f: Fault, column: str, lead: tuple[float, float],
                      rates: tuple[float, float]) -> tuple[int, int]:
    """A counter rising from the next scrape; returns (XID time, repair time)."""
    t0 = sim.next_tick(sim.now_us)
    t_xid = t0 + _lead(sim, *lead) + _jitter(sim)
    sim.tel.add(Overlay(f, "counter", _index(f.gpu), t0, t_xid, column=column,
                        rate0=rates[0], rate1=rates[1]))
    f.symptom(t0)
    end = repair_time(sim, f, t_xid)
    f.end_us = end
    return t_xid, end


def gpu_hw(sim: World, f: Fault) -> None:
    sim.injector.hold_nodes(f, [f.node])
    if f.variant == "nvlink_xid74":
        t_xid, end = _counter_then_xid(sim, f, "nvlink_crc_flit_errors", (60, 300), (5, 300))
        sim.at(t_xid, lambda: _gpu_fatal(sim, f, [74], CUDA_FAILURE, (1, 30), end))
        return
    code = {"xid79": 79, "xid62": 62, "xid45": 45}[f.variant]
    f.end_us = repair_time(sim, f, sim.now_us)
    _gpu_fatal(sim, f, [code], CUDA_FAILURE, (1, 30), f.end_us, absent=code == 79,
               idle=code != 79)


def gpu_hbm(sim: World, f: Fault) -> None:
    sim.injector.hold_nodes(f, [f.node])
    t0 = sim.next_tick(sim.now_us)
    rates = (float(sim.rng_fault.uniform(1, 3)), float(sim.rng_fault.uniform(20, 80)))
    t_xid, end = _counter_then_xid(sim, f, "ecc_sbe_vol_total", (600, 3600), rates)
    t_pending = t0 + round((t_xid - t0) * float(sim.rng_fault.uniform(0.5, 0.8)))

    def pending() -> None:
        sim.tel.remap_pending[f.gpu] = 1.0

    sim.at(t_pending, pending)
    sim.at(t_xid, lambda: _gpu_fatal(sim, f, _HBM_XIDS[f.variant], ECC_FAILURE, (0.5, 5), end,
                                     dbe=True, remap_failure=f.variant == "xid63_64"))


def gpu_sram(sim: World, f: Fault) -> None:
    sim.injector.hold_nodes(f, [f.node])
    t_xid, end = _counter_then_xid(sim, f, "sram_ecc_total", (120, 600), (2, 40))
    code = 94 if f.variant == "xid94" else 95
    sim.at(t_xid, lambda: _gpu_fatal(sim, f, [code], ECC_FAILURE, (0.5, 5), end))


def gpu_gsp(sim: World, f: Fault) -> None:
    sim.injector.hold_nodes(f, [f.node])
    f.end_us = repair_time(sim, f, sim.now_us)
    code = 119 if f.variant == "xid119" else 120
    _gpu_fatal(sim, f, [code], GSP_FAILURE, (10, 60), f.end_us, idle=True)


def _heat(sim: World, f: Fault, gpus: list[int], ramp_s: tuple[float, float],
          rise_c: tuple[float, float], clock: tuple[float, float], hw_above: float) -> None:
    """Temperatures ramp up from the next scrape, then the GPUs throttle until the repair."""
    t0 = sim.next_tick(sim.now_us)
    t1 = t0 + _lead(sim, *ramp_s)
    rise = float(sim.rng_fault.uniform(*rise_c))
    index = np.asarray(gpus, dtype=np.intp)
    bits = c.THROTTLE_SW_THERMAL | (c.THROTTLE_HW_THERMAL if rise > hw_above else 0)
    sim.tel.add(Overlay(f, "temp", index, t0, t1, value=rise))
    sim.tel.add(Overlay(f, "throttle", index, t1, t1, bits=bits,
                        clock=1.0 - float(sim.rng_fault.uniform(*clock))))
    f.symptom(t0)
    f.detail = f"{f.variant}: +{rise:.1f} °C over {(t1 - t0) / 6e7:.0f} min, then throttling"
    f.end_us = repair_time(sim, f, t1)

    def repair() -> None:
        sim.tel.clear(f)
        sim.injector.finish(f)

    sim.at(f.end_us, repair)


def gpu_thermal(sim: World, f: Fault) -> None:
    sim.injector.hold_nodes(f, [f.node])
    _heat(sim, f, [f.gpu], (300, 900), (10, 25), (0.2, 0.4), hw_above=18)


def cooling(sim: World, f: Fault) -> None:
    nodes = list(sim.topo.rack_nodes(f.rack))
    sim.injector.busy_racks.add(f.rack)
    sim.injector.hold_nodes(f, nodes)
    gpn = sim.topo.gpus_per_node
    gpus = [n * gpn + i for n in nodes for i in range(gpn)]
    f.touch(*(sim.topo.gpu_entity(g) for g in gpus))
    _heat(sim, f, gpus, (600, 1800), (8, 20), (0.1, 0.25), hw_above=99)


# ---- jobs ------------------------------------------------------------------------------------


def _job(sim: World, f: Fault) -> Job:
    assert f.job >= 0, f"{f.category} fault without a target job"
    return sim.sched.jobs[f.job]


def sdc(sim: World, f: Fault) -> None:
    sim.sched.corrupt(_job(sim, f), f, f.variant)


def software(sim: World, f: Fault) -> None:
    job = _job(sim, f)
    code, reason = SOFTWARE_FAILURES[f.variant]
    f.symptom(sim.now_us)
    sim.sched.fail(job, code, reason, f)
    sim.injector.finish(f, sim.now_us)


def nccl_hang(sim: World, f: Fault) -> None:
    sim.sched.hang(_job(sim, f), f)
    f.symptom(sim.next_tick(sim.now_us))
    f.end_us = sim.now_us + _us(sim.config.nccl_timeout_s)


# ---- network ---------------------------------------------------------------------------------


def network(sim: World, f: Fault) -> None:
    (_leaf_down if f.variant == "switch" else _cable)(sim, f)


def _cable(sim: World, f: Fault) -> None:
    tel, sched, port, node = sim.tel, sim.sched, f.port, f.node
    sim.injector.hold_nodes(f, [node])
    rail = f.gpu % sim.topo.gpus_per_node
    f.touch(sim.topo.nic_entity(node, rail))
    t0 = sim.next_tick(sim.now_us)
    first_flap = t0 + _lead(sim, 120, 600) + _jitter(sim)
    down_us = _us(max(15.0, 1.5 * sim.config.interval_s))
    flaps = [first_flap]
    for _ in range(int(sim.rng_fault.integers(2, 6))):
        flaps.append(flaps[-1] + down_us + _between(sim, 10, 60))
    # A flapping cable flaps in bursts: quiet for a while after the first (the link retrains),
    # then again, until it is replaced. Each burst is the same fault episode.
    bursts = [(t0, flaps)]
    for _ in range(int(sim.rng_fault.choice(CABLE_EXTRA_BURSTS))):
        quiet_from = bursts[-1][1][-1] + _between(sim, *CABLE_BURST_GAP_S)
        again = [quiet_from]
        for _ in range(int(sim.rng_fault.integers(1, 4))):
            again.append(again[-1] + down_us + _between(sim, 10, 60))
        bursts.append((quiet_from - _between(sim, 60, 180), again))
    for start, burst in bursts:
        for column, rates in (("symbol_error", (2.0, 60.0)),
                              ("link_error_recovery", (1.0, 3.0))):
            tel.add(Overlay(f, "port_counter", _index(port), start, burst[-1], column=column,
                            rate0=rates[0], rate1=rates[1]))
    slowdown = float(sim.rng_fault.uniform(1.1, 1.4))
    tel.add(Overlay(f, "slow", _index(), t0, t0, clock=1.0 / slowdown, nodes=(node,)))
    f.symptom(t0)
    flaps = [t for _start, burst in bursts for t in burst]
    f.detail = (f"cable: errors for {(first_flap - t0) / 6e7:.0f} min, {len(flaps)} flaps in "
                f"{len(bursts)} burst(s)")
    f.end_us = repair_time(sim, f, flaps[-1])

    def down(first: bool, last: bool) -> None:
        tel.port_state[port] = c.PORT_STATE_DOWN
        tel.bump_port("link_downed", [port])
        if first:
            tel.clear(f, "slow")
            sched.drain([node])
            code, reason = NETWORK_FAILURE
            sim.after(_between(sim, 5, 20), lambda: sched.fail_on([node], code, reason, f))
        if not last:
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


def _leaf_down(sim: World, f: Fault) -> None:
    tel, sched, topo = sim.tel, sim.sched, sim.topo
    sim.injector.busy_leaves.add(f.leaf)
    ports = list(topo.switch_ports(f.leaf))
    ports += [int(topo.port_peer[p]) for p in ports if topo.port_peer[p] >= 0]
    tel.port_state[ports] = c.PORT_STATE_DOWN
    tel.bump_port("link_downed", ports)
    f.symptom(sim.next_tick(sim.now_us))
    f.touch(*(topo.link_entity(p) for p in ports))
    rail = f.leaf % topo.gpus_per_node
    nodes = list(topo.su_nodes(f.su))
    f.touch(*(topo.nic_entity(n, rail) for n in nodes))
    sched.drain(nodes)
    code, reason = NETWORK_FAILURE
    sim.after(_between(sim, 5, 30), lambda: sched.fail_on(nodes, code, reason, f))
    f.detail = f"leaf switch down: rail {rail} of {len(nodes)} nodes"
    f.end_us = repair_time(sim, f, sim.now_us)

    def repair() -> None:
        tel.port_state[ports] = c.PORT_STATE_ACTIVE
        sched.undrain(nodes)
        sim.injector.finish(f)

    sim.at(f.end_us, repair)


def nic(sim: World, f: Fault) -> None:
    tel, sched, port, node = sim.tel, sim.sched, f.port, f.node
    sim.injector.hold_nodes(f, [node])
    f.touch(sim.topo.link_entity(port))
    t0 = sim.next_tick(sim.now_us)
    t_down = t0 + _lead(sim, 60, 300) + _jitter(sim)
    tel.add(Overlay(f, "port_counter", _index(port), t0, t_down, column="rcv_errors",
                    rate0=2.0, rate1=50.0))
    f.symptom(t0)
    f.end_us = repair_time(sim, f, t_down)

    def down() -> None:
        tel.clear(f)
        tel.port_state[port] = c.PORT_STATE_DOWN
        tel.bump_port("link_downed", [port])
        sched.drain([node])
        code, reason = NETWORK_FAILURE
        sim.after(_between(sim, 5, 30), lambda: sched.fail_on([node], code, reason, f))

    def repair() -> None:
        tel.port_state[port] = c.PORT_STATE_ACTIVE
        sched.undrain([node])
        sim.injector.finish(f)

    sim.at(t_down, down)
    sim.at(f.end_us, repair)


# ---- hosts, racks, storage -------------------------------------------------------------------


def _bring_up(sim: World, f: Fault, nodes: list[int], *, maintenance: bool = False,
              stagger_s: float = 0.0) -> None:
    """At ``f.end_us``: the nodes come back (``node.came_up``), rejoin the pool; then report."""
    remaining = [len(nodes)]

    def come_up(node: int) -> None:
        sim.tel.set_node_up(node, True)
        sim.emit(c.NodeCameUp(node=sim.topo.node_names[node]))
        if maintenance:
            sim.emit(c.NodeMaintenanceEnded(node=sim.topo.node_names[node]))
        sim.sched.undrain([node])
        remaining[0] -= 1
        if remaining[0] == 0:
            sim.injector.finish(f, sim.now_us)

    assert f.end_us is not None
    for node in nodes:
        at = f.end_us + (_between(sim, 0, stagger_s) if stagger_s else 0)
        sim.at(at, lambda node=node: come_up(node))  # type: ignore[misc]


def _went_down(sim: World, f: Fault, node: int, reason: str) -> Callable[[], None]:
    def went_down() -> None:
        sim.tel.set_node_up(node, False)
        sim.emit(c.NodeWentDown(node=sim.topo.node_names[node], reason=reason))
        f.symptom(sim.now_us)

    return went_down


def host_maintenance(sim: World, f: Fault) -> None:
    node = f.node
    sim.injector.hold_nodes(f, [node])
    sim.emit(c.NodeMaintenanceStarted(node=sim.topo.node_names[node],
                                      reason="unplanned maintenance"))
    f.symptom(sim.now_us)
    sim.sched.drain([node])
    code, reason = MAINTENANCE_FAILURE
    sim.after(_between(sim, 5, 30), lambda: sim.sched.fail_on([node], code, reason, f))
    t_down = sim.now_us + _between(sim, 60, 300)
    sim.at(t_down, _went_down(sim, f, node, "reboot"))
    f.end_us = max(repair_time(sim, f, sim.now_us), t_down + _us(120))
    _bring_up(sim, f, [node], maintenance=True)


def host_hw(sim: World, f: Fault) -> None:
    node = f.node
    sim.injector.hold_nodes(f, [node])
    sim.tel.set_node_up(node, False)
    sim.sched.drain([node])
    first_missing = sim.next_tick(sim.now_us)  # the scrape at `now` already misses it
    f.symptom(first_missing)
    code, reason = NODE_FAILURE
    sim.after(_between(sim, 30, 60), lambda: sim.sched.fail_on([node], code, reason, f))
    t_down = first_missing + _between(sim, 60, 90)
    sim.at(t_down, _went_down(sim, f, node, "unreachable"))
    f.end_us = repair_time(sim, f, t_down)
    _bring_up(sim, f, [node])


def rack_power(sim: World, f: Fault) -> None:
    nodes = list(sim.topo.rack_nodes(f.rack))
    sim.injector.busy_racks.add(f.rack)
    sim.injector.hold_nodes(f, nodes)
    for node in nodes:
        sim.tel.set_node_up(node, False)
    sim.sched.drain(nodes)
    f.symptom(sim.next_tick(sim.now_us))
    f.touch(*(sim.topo.node_entity(n) for n in nodes))
    for node in nodes:
        sim.at(sim.now_us + _between(sim, 1, 5), _went_down(sim, f, node, "power loss"))
    code, reason = NODE_FAILURE
    sim.after(_between(sim, 10, 40), lambda: sim.sched.fail_on(nodes, code, reason, f))
    f.end_us = repair_time(sim, f, sim.now_us)
    _bring_up(sim, f, nodes, stagger_s=60)


def storage(sim: World, f: Fault) -> None:
    factor = float(sim.rng_fault.uniform(5, 20))
    sim.sched.storage[f.vc] = (factor, f)
    f.detail = f"checkpoint writes {factor:.1f}x slower on {sim.topo.vc_names[f.vc]}"
    f.end_us = repair_time(sim, f, sim.now_us)

    def repair() -> None:
        sim.sched.storage.pop(f.vc, None)
        sim.injector.finish(f)

    sim.at(f.end_us, repair)


SYMPTOMS: Final[dict[str, Callable[[World, Fault], None]]] = {
    "gpu_hw": gpu_hw, "gpu_hbm": gpu_hbm, "gpu_sram": gpu_sram, "gpu_gsp": gpu_gsp,
    "gpu_thermal": gpu_thermal, "sdc": sdc, "software": software, "nccl_hang": nccl_hang,
    "network": network, "nic": nic, "host_maintenance": host_maintenance, "host_hw": host_hw,
    "rack_power": rack_power, "cooling": cooling, "storage": storage,
}
