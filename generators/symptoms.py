"""What each fault category does to the telemetry, step by step (docs/faults.md is the contract).

One function per category takes the simulator, a targeted ``Fault`` and the ``Shape`` its
faults take (``template.TEMPLATE`` or ``wide.WIDE``); it schedules the symptoms (precursor ramps,
XIDs, samples stopping, port flaps, job failures), drains what a real scheduler would drain, and
schedules the repair, which undoes everything and reports the fault. Every time, rate and
magnitude is drawn from the shape's ranges, every yes/no (a precursor missing, in bursts, an XID
line late...) from its shares: one set of steps for every shape, so the template and the wide
shapes differ only in their tables. This module holds the GPU, host, rack and storage steps and
``SYMPTOMS``, every category's; the job-level ones are in ``job_symptoms``, the network ones in
``network_symptoms``, the building blocks they share in ``steps``.

The simulator is seen as a ``world.World`` (with the scheduler and the injector behind it as
``JobControl`` and ``FaultLedger``): these modules import no other part, the injector imports
them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import numpy as np

from fleetlog.generators import job_symptoms, network_symptoms
from fleetlog.generators.faults import Fault
from fleetlog.generators.shapes import Shape, chance
from fleetlog.generators.steps import (
    Step,
    add_note,
    at_or_now,
    between,
    draw,
    draw_rates,
    jitter,
    lead_us,
    precursor,
    repair_time,
    us,
)
from fleetlog.generators.telemetry import Overlay
from fleetlog.generators.world import World
from fleetlog.ingest import contract as c

# Kernel log text per XID (the part after "NVRM: Xid (PCI:...): <code>, pid=..., ").
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
MAINTENANCE_FAILURE: Final = (143, "node drained for maintenance")
NODE_FAILURE: Final = (137, "node failure")
_HBM_XIDS: Final = {"xid48": [48], "xid63_64": [63, 64], "xid94": [94], "xid95": [95],
                    "xid140": [140]}


PCIE_REPLAYS: Final = ("pcie_start", "pcie_end")


# ---- GPU -------------------------------------------------------------------------------------


def _gpu_fatal(sim: World, f: Fault, shape: Shape, codes: list[int], failure: tuple[int, str],
               end_us: int, *, absent: bool = False, idle: bool = False, idle_after_us: int = 0,
               dbe: bool = False, remap_failure: bool = False) -> None:
    """The XID (and a DBE), the GPU gone or idle, the node drained, the job failing, the repair.
    Where the samples show the failure at once (gone, idle, a DBE), the XID line may come late
    (in a share of the shape's faults)."""
    tel, sched, gpu, node = sim.tel, sim.sched, f.gpu, f.node
    tel.clear(f, "counter")
    visible = absent or dbe or (idle and idle_after_us == 0)
    late = visible and shape.chance(sim.rng_fault, "xid_late")
    lag = us(draw(sim, shape, "gpu_hw", "xid_late")) if late else 0
    if dbe:
        tel.bump("ecc_dbe_vol_total", [gpu])

    def xids() -> None:
        sim.xid(gpu, codes[0], fault=f)
        if len(codes) > 1:
            def second() -> None:
                sim.xid(gpu, codes[1], fault=f)
                if remap_failure:
                    tel.remap_failure[gpu] = 1.0

            sim.after(between(sim, 1, 5), second)

    def go_idle() -> None:
        tel.forced_idle[gpu] += 1

    if not late:
        xids()
    if absent:
        tel.set_gpu_ok(gpu, False)
    if idle and idle_after_us == 0:
        go_idle()
    elif idle:
        sim.after(idle_after_us, go_idle)
    if late:
        f.symptom(sim.next_tick(sim.now_us))
        f.touch(sim.topo.gpu_entity(gpu))
        add_note(shape, f, f"XID line {lag / 1e6:.0f} s late")
        sim.after(lag, xids)
    sched.drain([node])
    code, reason = failure
    sim.after(us(draw(sim, shape, f.category, "fail_after")),
              lambda: sched.fail_on([node], code, reason, f))

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

    sim.at(max(end_us, sim.now_us + lag + idle_after_us + 1), repair)


def _counter_then_xid(sim: World, f: Fault, shape: Shape, column: str, lead: str,
                      rates: tuple[str, str]) -> tuple[int | None, int, int]:
    """A counter rising from the next scrape (unless the shape leaves it out) until the XID,
    a little after a scrape; returns (its first scrape or None, XID time, repair time)."""
    category = f.category
    t0: int | None = None
    t_xid = sim.now_us
    if shape.chance(sim.rng_fault, "precursor_missing"):
        add_note(shape, f, "no precursor")
    else:
        per_scrape = draw_rates(sim, shape, category, rates)
        t0 = sim.next_tick(sim.now_us)
        t_xid = t0 + lead_us(sim, shape, category, lead) + jitter(sim)
        precursor(sim, f, shape, "counter", column, f.gpu, t0, t_xid, per_scrape)
    end = repair_time(sim, f, t_xid)
    f.end_us = end
    return t0, t_xid, end


def gpu_hw(sim: World, f: Fault, shape: Shape) -> None:
    sim.injector.hold_nodes(f, [f.node])
    if f.variant == "nvlink_xid74":
        _t0, t_xid, end = _counter_then_xid(sim, f, shape, "nvlink_crc_flit_errors", "crc_lead",
                                            ("crc_start", "crc_end"))
        at_or_now(sim, t_xid, lambda: _gpu_fatal(sim, f, shape, [74], CUDA_FAILURE, end))
        return
    code = {"xid79": 79, "xid62": 62, "xid45": 45}[f.variant]
    t_xid = sim.now_us
    if code == 79 and shape.chance(sim.rng_fault, "xid79_pcie_precursor"):
        per_scrape = draw_rates(sim, shape, "gpu_hw", PCIE_REPLAYS)
        t0 = sim.next_tick(sim.now_us)
        t_xid = t0 + lead_us(sim, shape, "gpu_hw", "pcie_lead") + jitter(sim)
        precursor(sim, f, shape, "counter", "pcie_replays", f.gpu, t0, t_xid, per_scrape)
    end = f.end_us = repair_time(sim, f, t_xid)
    at_or_now(sim, t_xid, lambda: _gpu_fatal(sim, f, shape, [code], CUDA_FAILURE, end,
                                       absent=code == 79, idle=code != 79))


def gpu_hbm(sim: World, f: Fault, shape: Shape) -> None:
    sim.injector.hold_nodes(f, [f.node])
    t0, t_xid, end = _counter_then_xid(sim, f, shape, "ecc_sbe_vol_total", "lead",
                                       ("sbe_start", "sbe_end"))
    if t0 is not None and shape.chance(sim.rng_fault, "remap_pending_missing"):
        add_note(shape, f, "no remap pending")
    elif t0 is not None:
        share = draw(sim, shape, "gpu_hbm", "pending_at")

        def pending() -> None:
            sim.tel.remap_pending[f.gpu] = 1.0

        sim.at(t0 + round((t_xid - t0) * share), pending)
    at_or_now(sim, t_xid, lambda: _gpu_fatal(sim, f, shape, _HBM_XIDS[f.variant], ECC_FAILURE, end,
                                       dbe=True, remap_failure=f.variant == "xid63_64"))


def gpu_sram(sim: World, f: Fault, shape: Shape) -> None:
    sim.injector.hold_nodes(f, [f.node])
    _t0, t_xid, end = _counter_then_xid(sim, f, shape, "sram_ecc_total", "lead",
                                        ("errors_start", "errors_end"))
    code = 94 if f.variant == "xid94" else 95
    at_or_now(sim, t_xid, lambda: _gpu_fatal(sim, f, shape, [code], ECC_FAILURE, end))


def gpu_gsp(sim: World, f: Fault, shape: Shape) -> None:
    """XID 119/120 at once; the GPU goes idle (a drawn lag later); the job fails later still."""
    sim.injector.hold_nodes(f, [f.node])
    f.end_us = repair_time(sim, f, sim.now_us)
    code = 119 if f.variant == "xid119" else 120
    idle_after = us(draw(sim, shape, "gpu_gsp", "idle_lag"))
    _gpu_fatal(sim, f, shape, [code], GSP_FAILURE, f.end_us, idle=True, idle_after_us=idle_after)


def _heat(sim: World, f: Fault, shape: Shape, groups: list[list[int]],
          bits_for: Callable[[float], int]) -> None:
    """Each group of GPUs warms by its share of the rise (all of it unless the shape spreads
    it); throttling (``bits_for(rise)``) at the ramp's end or a drawn lag later."""
    category = f.category
    t0 = sim.next_tick(sim.now_us)
    t1 = t0 + lead_us(sim, shape, category, "ramp")
    rise = draw(sim, shape, category, "rise")
    bits = bits_for(rise)
    spread = shape.has(category, "spread")
    for gpus in groups:
        share = draw(sim, shape, category, "spread") if spread else 1.0
        sim.tel.add(Overlay(f, "temp", np.asarray(gpus, dtype=np.intp), t0, t1,
                            value=rise * share))
    t_throttle = t1 + us(draw(sim, shape, category, "throttle_lag"))
    clock = draw(sim, shape, category, "clock_drop")
    every = np.asarray([g for gpus in groups for g in gpus], dtype=np.intp)
    sim.tel.add(Overlay(f, "throttle", every, t_throttle, t_throttle, bits=bits,
                        clock=1.0 - clock))
    f.symptom(t0)
    f.detail = f"{f.variant}: +{rise:.1f} °C over {(t1 - t0) / 6e7:.0f} min, then throttling"
    add_note(shape, f, f"{(t_throttle - t1) / 1e6:.0f} s after the ramp (bits {bits:#x}, clock "
                    f"-{clock:.0%})")
    f.end_us = repair_time(sim, f, t_throttle)

    def repair() -> None:
        sim.tel.clear(f)
        sim.injector.finish(f)

    sim.at(f.end_us, repair)


def gpu_thermal(sim: World, f: Fault, shape: Shape) -> None:
    sim.injector.hold_nodes(f, [f.node])

    def bits_for(rise: float) -> int:
        """HW thermal by chance (with or without SW), else above the shape's rise, if any."""
        if shape.chance(sim.rng_fault, "hw_thermal"):
            both = chance(sim.rng_fault, 0.5)
            return c.THROTTLE_HW_THERMAL | (c.THROTTLE_SW_THERMAL if both else 0)
        hot = shape.has("gpu_thermal", "hw_above") and rise > draw(sim, shape, "gpu_thermal",
                                                                    "hw_above")
        return c.THROTTLE_SW_THERMAL | (c.THROTTLE_HW_THERMAL if hot else 0)

    _heat(sim, f, shape, [[f.gpu]], bits_for)


def cooling(sim: World, f: Fault, shape: Shape) -> None:
    nodes = list(sim.topo.rack_nodes(f.rack))
    sim.injector.busy_racks.add(f.rack)
    sim.injector.hold_nodes(f, nodes)
    gpn = sim.topo.gpus_per_node
    groups = [list(range(n * gpn, (n + 1) * gpn)) for n in nodes]
    f.touch(*(sim.topo.gpu_entity(g) for gpus in groups for g in gpus))
    _heat(sim, f, shape, groups, lambda _rise: c.THROTTLE_SW_THERMAL)


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
        at = f.end_us + (between(sim, 0, stagger_s) if stagger_s else 0)
        sim.at(at, lambda node=node: come_up(node))  # type: ignore[misc]


def _went_down(sim: World, f: Fault, node: int, reason: str) -> Callable[[], None]:
    def went_down() -> None:
        sim.tel.set_node_up(node, False)
        sim.emit(c.NodeWentDown(node=sim.topo.node_names[node], reason=reason))
        f.symptom(sim.now_us)

    return went_down


def host_maintenance(sim: World, f: Fault, shape: Shape) -> None:
    node = f.node
    sim.injector.hold_nodes(f, [node])
    sim.emit(c.NodeMaintenanceStarted(node=sim.topo.node_names[node],
                                      reason="unplanned maintenance"))
    f.symptom(sim.now_us)
    sim.sched.drain([node])
    code, reason = MAINTENANCE_FAILURE
    sim.after(us(draw(sim, shape, "host_maintenance", "fail_after")),
              lambda: sim.sched.fail_on([node], code, reason, f))
    t_down = sim.now_us + us(draw(sim, shape, "host_maintenance", "down_after"))
    sim.at(t_down, _went_down(sim, f, node, "reboot"))
    f.end_us = max(repair_time(sim, f, sim.now_us), t_down + us(120))
    _bring_up(sim, f, [node], maintenance=True)


def host_hw(sim: World, f: Fault, shape: Shape) -> None:
    node = f.node
    sim.injector.hold_nodes(f, [node])
    sim.tel.set_node_up(node, False)
    sim.sched.drain([node])
    first_missing = sim.next_tick(sim.now_us)  # the scrape at `now` already misses it
    f.symptom(first_missing)
    code, reason = NODE_FAILURE
    sim.after(us(draw(sim, shape, "host_hw", "fail_after")),
              lambda: sim.sched.fail_on([node], code, reason, f))
    t_down = first_missing + us(draw(sim, shape, "host_hw", "down_after"))
    sim.at(t_down, _went_down(sim, f, node, "unreachable"))
    f.end_us = repair_time(sim, f, t_down)
    _bring_up(sim, f, [node])


def rack_power(sim: World, f: Fault, shape: Shape) -> None:
    """The rack's nodes go dark in one scrape or (in the wide shapes) within a drawn stagger."""
    nodes = list(sim.topo.rack_nodes(f.rack))
    sim.injector.busy_racks.add(f.rack)
    sim.injector.hold_nodes(f, nodes)
    stagger = draw(sim, shape, "rack_power", "stagger")
    sim.sched.drain(nodes)
    f.touch(*(sim.topo.node_entity(n) for n in nodes))

    def dark(node: int) -> None:
        sim.tel.set_node_up(node, False)
        f.symptom(sim.next_tick(sim.now_us))

    offsets = [between(sim, 0, stagger) if stagger else 0 for _ in nodes]
    for node, offset in zip(nodes, offsets, strict=True):
        if offset:
            sim.at(sim.now_us + offset, lambda node=node: dark(node))  # type: ignore[misc]
        else:
            dark(node)
    for node, offset in zip(nodes, offsets, strict=True):
        sim.at(sim.now_us + offset + between(sim, 1, 5), _went_down(sim, f, node, "power loss"))
    code, reason = NODE_FAILURE
    sim.after(us(stagger + draw(sim, shape, "rack_power", "fail_after")),
              lambda: sim.sched.fail_on(nodes, code, reason, f))
    f.end_us = repair_time(sim, f, sim.now_us + us(stagger))
    _bring_up(sim, f, nodes, stagger_s=60)


def storage(sim: World, f: Fault, shape: Shape) -> None:
    factor = draw(sim, shape, "storage", "slowdown")
    sim.sched.storage[f.vc] = (factor, f)
    f.detail = f"checkpoint writes {factor:.1f}x slower on {sim.topo.vc_names[f.vc]}"
    f.end_us = repair_time(sim, f, sim.now_us)

    def repair() -> None:
        sim.sched.storage.pop(f.vc, None)
        sim.injector.finish(f)

    sim.at(f.end_us, repair)


SYMPTOMS: Final[dict[str, Step]] = {
    "gpu_hw": gpu_hw, "gpu_hbm": gpu_hbm, "gpu_sram": gpu_sram, "gpu_gsp": gpu_gsp,
    "gpu_thermal": gpu_thermal, "sdc": job_symptoms.sdc, "software": job_symptoms.software,
    "nccl_hang": job_symptoms.nccl_hang, "network": network_symptoms.network,
    "nic": network_symptoms.nic, "host_maintenance": host_maintenance, "host_hw": host_hw,
    "rack_power": rack_power, "cooling": cooling, "storage": storage,
}
