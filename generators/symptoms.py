"""What each fault category does to the telemetry, step by step (docs/faults.md is the contract).

One function per category takes the simulator, a targeted ``Fault`` and the ``Shape`` its
faults take (``template.TEMPLATE`` or ``wide.WIDE``); it schedules the symptoms (precursor ramps,
XIDs, samples stopping, port flaps, job failures), drains what a real scheduler would drain, and
schedules the repair, which undoes everything and reports the fault. Every time, rate and
magnitude is drawn from the shape's ranges, every yes/no (a precursor missing, in bursts, an XID
line late...) from its shares: one set of steps for every shape, so the template and the wide
shapes differ only in their tables. Onsets of sample-borne symptoms are the first scrape that
shows them (``sim.next_tick``); event-borne ones are the event's time. Precursor durations are
shortened (never below the range's low end) to fit a short window.

The simulator is seen as a ``world.World`` (with the scheduler and the injector behind it as
``JobControl`` and ``FaultLedger``): this module imports no other part, the injector imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import numpy as np

from fleetlog.generators.faults import REPAIR_CLIP_H, REPAIR_HOURS, REPAIR_LOGNORMAL, Fault
from fleetlog.generators.jobs import Job
from fleetlog.generators.shapes import Shape, chance
from fleetlog.generators.telemetry import Overlay
from fleetlog.generators.world import World
from fleetlog.ingest import contract as c

# A flapping cable: how many more bursts of flaps after the first (equally likely), and the quiet
# between two bursts (the link retrains and runs clean for a while, then flaps again).
CABLE_EXTRA_BURSTS: Final = (0, 0, 1, 2, 3)
CABLE_BURST_GAP_S: Final = (20 * 60.0, 150 * 60.0)

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
NETWORK_FAILURE: Final = (1, "NCCL error: remote process exited or there was a network error")
MAINTENANCE_FAILURE: Final = (143, "node drained for maintenance")
NODE_FAILURE: Final = (137, "node failure")
SOFTWARE_FAILURES: Final = {
    "runtime_error": (1, "RuntimeError: expected all tensors to be on the same device"),
    "oom": (1, "OOM: out of memory while allocating activations"),
    "import_error": (1, "ImportError: cannot import name 'fused_rms_norm' from 'kernels'"),
    "segfault": (139, "Segmentation fault (core dumped)"),
}
NCCL_WATCHDOG: Final = (-6, "NCCL watchdog timeout")
# a hang that ends without the watchdog's line: killed by the scheduler or an operator, or aborted
HANG_KILLS: Final = ((137, "Killed"), (-6, "Aborted (core dumped)"))
_HBM_XIDS: Final = {"xid48": [48], "xid63_64": [63, 64], "xid94": [94], "xid95": [95],
                    "xid140": [140]}


BURSTS: Final = (2, 6)  # a bursty precursor: how many bursts, and scrapes each
BURST_SCRAPES: Final = (1, 4)
PCIE_REPLAYS: Final = ("pcie_start", "pcie_end")

Step = Callable[[World, Fault, Shape], None]


def _us(seconds: float) -> int:
    return round(seconds * 1_000_000)


def _between(sim: World, lo_s: float, hi_s: float) -> int:
    return _us(float(sim.rng_fault.uniform(lo_s, hi_s)))


def _draw(sim: World, shape: Shape, category: str, knob: str) -> float:
    return shape.draw(sim.rng_fault, category, knob)


def _rates(sim: World, shape: Shape, category: str, knobs: tuple[str, str]
           ) -> tuple[float, float]:
    """A precursor's rate at its start and end, per scrape."""
    dt = sim.config.interval_s
    start = shape.rate(sim.rng_fault, category, knobs[0], dt)
    return start, shape.rate(sim.rng_fault, category, knobs[1], dt)


def _lead(sim: World, shape: Shape, category: str, knob: str) -> int:
    """A precursor's duration: the documented range, cut to half the window left (never below
    the range's low end)."""
    r = shape.ranges[category][knob]
    lo = r.lo * r.scale
    room = (sim.config.end_us - sim.now_us) / 1e6 * 0.5
    return _us(float(sim.rng_fault.uniform(lo, max(lo, min(r.hi * r.scale, room)))))


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


def _note(shape: Shape | None, f: Fault, text: str) -> None:
    """Add to the truth's ``detail`` how this fault was shaped (``xid48: no precursor, ...``),
    where the shape varies per fault."""
    if shape is not None and shape.notes:
        f.detail = f"{f.detail}, {text}" if f.detail else f"{f.variant}: {text}"


def _precursor(sim: World, f: Fault, shape: Shape, kind: str, column: str, index: int,
               t0: int, t1: int, rates: tuple[float, float], *, note: bool = True) -> None:
    """A counter rising on one GPU (``counter``) or port (``port_counter``) from ``t0`` to
    ``t1``: a ramp from ``rates[0]`` to ``rates[1]`` per scrape, or (in a share) 2-6 bursts.
    A ramp of at least one per scrape shows in every scrape; a slower one (a trickle) skips
    scrapes, and then its first scrape is made to show one: the onset the truth names.
    ``note``: say its shape in the truth's detail (once per fault, not per port or burst)."""
    where = _index(index)
    shown = shape if note else None
    if shape.chance(sim.rng_fault, "bursty") and t1 > t0:
        sim.tel.add(Overlay(f, kind, where, t0, t0, column=column))
        count = int(sim.rng_fault.integers(BURSTS[0], BURSTS[1] + 1))
        dt = sim.config.interval_s
        for at in np.sort(sim.rng_fault.integers(t0, t1, size=count)).tolist():
            tb = sim.next_tick(int(at))
            scrapes = int(sim.rng_fault.integers(BURST_SCRAPES[0], BURST_SCRAPES[1] + 1))
            rate = max(1.0, rates[1] * 5)
            sim.tel.add(Overlay(f, kind, where, tb, tb + _us(scrapes * dt), column=column,
                                rate0=rate, rate1=rate))
        _note(shown, f, f"{column} in {count} bursts over {(t1 - t0) / 6e7:.1f} min")
    else:
        trickle = min(rates) < 1.0
        if trickle:
            sim.tel.add(Overlay(f, kind, where, t0, t0, column=column))
        sim.tel.add(Overlay(f, kind, where, t0, t1, column=column, rate0=rates[0],
                            rate1=rates[1], floor=0 if trickle else 1))
        per_hour = 3600.0 / sim.config.interval_s
        _note(shown, f, f"{column} {rates[0] * per_hour:.0f} -> {rates[1] * per_hour:.0f} per "
                        f"hour over {(t1 - t0) / 6e7:.1f} min")
    f.symptom(t0)


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
    lag = _us(_draw(sim, shape, "gpu_hw", "xid_late")) if late else 0
    if dbe:
        tel.bump("ecc_dbe_vol_total", [gpu])

    def xids() -> None:
        sim.xid(gpu, codes[0], fault=f)
        if len(codes) > 1:
            def second() -> None:
                sim.xid(gpu, codes[1], fault=f)
                if remap_failure:
                    tel.remap_failure[gpu] = 1.0

            sim.after(_between(sim, 1, 5), second)

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
        _note(shape, f, f"XID line {lag / 1e6:.0f} s late")
        sim.after(lag, xids)
    sched.drain([node])
    code, reason = failure
    sim.after(_us(_draw(sim, shape, f.category, "fail_after")),
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
        _note(shape, f, "no precursor")
    else:
        per_scrape = _rates(sim, shape, category, rates)
        t0 = sim.next_tick(sim.now_us)
        t_xid = t0 + _lead(sim, shape, category, lead) + _jitter(sim)
        _precursor(sim, f, shape, "counter", column, f.gpu, t0, t_xid, per_scrape)
    end = repair_time(sim, f, t_xid)
    f.end_us = end
    return t0, t_xid, end


def _at(sim: World, t_us: int, action: Callable[[], None]) -> None:
    """``action`` now if ``t_us`` is now, else at ``t_us``."""
    if t_us <= sim.now_us:
        action()
    else:
        sim.at(t_us, action)


def gpu_hw(sim: World, f: Fault, shape: Shape) -> None:
    sim.injector.hold_nodes(f, [f.node])
    if f.variant == "nvlink_xid74":
        _t0, t_xid, end = _counter_then_xid(sim, f, shape, "nvlink_crc_flit_errors", "crc_lead",
                                            ("crc_start", "crc_end"))
        _at(sim, t_xid, lambda: _gpu_fatal(sim, f, shape, [74], CUDA_FAILURE, end))
        return
    code = {"xid79": 79, "xid62": 62, "xid45": 45}[f.variant]
    t_xid = sim.now_us
    if code == 79 and shape.chance(sim.rng_fault, "xid79_pcie_precursor"):
        per_scrape = _rates(sim, shape, "gpu_hw", PCIE_REPLAYS)
        t0 = sim.next_tick(sim.now_us)
        t_xid = t0 + _lead(sim, shape, "gpu_hw", "pcie_lead") + _jitter(sim)
        _precursor(sim, f, shape, "counter", "pcie_replays", f.gpu, t0, t_xid, per_scrape)
    end = f.end_us = repair_time(sim, f, t_xid)
    _at(sim, t_xid, lambda: _gpu_fatal(sim, f, shape, [code], CUDA_FAILURE, end,
                                       absent=code == 79, idle=code != 79))


def gpu_hbm(sim: World, f: Fault, shape: Shape) -> None:
    sim.injector.hold_nodes(f, [f.node])
    t0, t_xid, end = _counter_then_xid(sim, f, shape, "ecc_sbe_vol_total", "lead",
                                       ("sbe_start", "sbe_end"))
    if t0 is not None and shape.chance(sim.rng_fault, "remap_pending_missing"):
        _note(shape, f, "no remap pending")
    elif t0 is not None:
        share = _draw(sim, shape, "gpu_hbm", "pending_at")

        def pending() -> None:
            sim.tel.remap_pending[f.gpu] = 1.0

        sim.at(t0 + round((t_xid - t0) * share), pending)
    _at(sim, t_xid, lambda: _gpu_fatal(sim, f, shape, _HBM_XIDS[f.variant], ECC_FAILURE, end,
                                       dbe=True, remap_failure=f.variant == "xid63_64"))


def gpu_sram(sim: World, f: Fault, shape: Shape) -> None:
    sim.injector.hold_nodes(f, [f.node])
    _t0, t_xid, end = _counter_then_xid(sim, f, shape, "sram_ecc_total", "lead",
                                        ("errors_start", "errors_end"))
    code = 94 if f.variant == "xid94" else 95
    _at(sim, t_xid, lambda: _gpu_fatal(sim, f, shape, [code], ECC_FAILURE, end))


def gpu_gsp(sim: World, f: Fault, shape: Shape) -> None:
    """XID 119/120 at once; the GPU goes idle (a drawn lag later); the job fails later still."""
    sim.injector.hold_nodes(f, [f.node])
    f.end_us = repair_time(sim, f, sim.now_us)
    code = 119 if f.variant == "xid119" else 120
    idle_after = _us(_draw(sim, shape, "gpu_gsp", "idle_lag"))
    _gpu_fatal(sim, f, shape, [code], GSP_FAILURE, f.end_us, idle=True, idle_after_us=idle_after)


def _heat(sim: World, f: Fault, shape: Shape, groups: list[list[int]],
          bits_for: Callable[[float], int]) -> None:
    """Each group of GPUs warms by its share of the rise (all of it unless the shape spreads
    it); throttling (``bits_for(rise)``) at the ramp's end or a drawn lag later."""
    category = f.category
    t0 = sim.next_tick(sim.now_us)
    t1 = t0 + _lead(sim, shape, category, "ramp")
    rise = _draw(sim, shape, category, "rise")
    bits = bits_for(rise)
    spread = shape.has(category, "spread")
    for gpus in groups:
        share = _draw(sim, shape, category, "spread") if spread else 1.0
        sim.tel.add(Overlay(f, "temp", np.asarray(gpus, dtype=np.intp), t0, t1,
                            value=rise * share))
    t_throttle = t1 + _us(_draw(sim, shape, category, "throttle_lag"))
    clock = _draw(sim, shape, category, "clock_drop")
    every = np.asarray([g for gpus in groups for g in gpus], dtype=np.intp)
    sim.tel.add(Overlay(f, "throttle", every, t_throttle, t_throttle, bits=bits,
                        clock=1.0 - clock))
    f.symptom(t0)
    f.detail = f"{f.variant}: +{rise:.1f} °C over {(t1 - t0) / 6e7:.0f} min, then throttling"
    _note(shape, f, f"{(t_throttle - t1) / 1e6:.0f} s after the ramp (bits {bits:#x}, clock "
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
        hot = shape.has("gpu_thermal", "hw_above") and rise > _draw(sim, shape, "gpu_thermal",
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


# ---- jobs ------------------------------------------------------------------------------------


def _job(sim: World, f: Fault) -> Job:
    assert f.job >= 0, f"{f.category} fault without a target job"
    return sim.sched.jobs[f.job]


def _before_the_end(sim: World, job: Job, lead_us: int) -> int:
    """``lead_us``, cut to half the steps the job has left (at its usual pace), so a precursor
    ends in the fault it announces and not in the job completing first."""
    if job.total_steps is None:
        return lead_us
    left_us = (job.total_steps - job.progress) * job.base_step_s * 1e6
    return max(_us(1.0), min(lead_us, round(left_us / 2)))


def _job_gpu(sim: World, job: Job) -> int:
    """One GPU of the job's, drawn."""
    node = job.nodes[int(sim.rng_fault.integers(len(job.nodes)))]
    return node * sim.topo.gpus_per_node + int(sim.rng_fault.integers(sim.topo.gpus_per_node))


def sdc(sim: World, f: Fault, shape: Shape) -> None:
    """The job's loss goes bad (by a drawn factor, at once or over a few reports, or NaN) until
    a check fails it; in a share, one of its GPUs corrected a few SRAM errors minutes before (a
    hint no detector may take for the cause: corrected errors are not a fault)."""
    job = _job(sim, f)
    low = _draw(sim, shape, "sdc", "factor_low")
    high = max(low, _draw(sim, shape, "sdc", "factor_high"))
    reports = shape.ranges["sdc"]["reports"]
    ramp = int(_draw(sim, shape, "sdc", "ramp"))
    if f.variant != "nan":
        _note(shape, f, f"loss x{low:.1f}-{high:.1f} reached over {ramp} report(s)")
    corrupt_at = sim.now_us
    if job.nodes and shape.chance(sim.rng_fault, "sdc_sram_hint"):
        gpu = _job_gpu(sim, job)
        sim.tel.bump("sram_ecc_total", [gpu], float(sim.rng_fault.integers(1, 4)))
        corrupt_at += _before_the_end(sim, job, _us(_draw(sim, shape, "sdc", "hint_lead")))
        job.faults.append(f)  # in play from now: no other job fault picks the job
        _note(shape, f, f"SRAM corrections on {sim.topo.gpu_entity(gpu)} "
                        f"{(corrupt_at - sim.now_us) / 6e7:.1f} min before")
    epoch = job.epoch

    def corrupt() -> None:
        if job.epoch != epoch:  # the job failed first (another fault): no corruption showed
            sim.injector.finish(f, sim.now_us)
        elif job.state != "running":  # checkpointing: the next steps carry it
            sim.after(sim.config.interval_us, corrupt)
        else:
            sim.sched.corrupt(job, f, f.variant, (low, high), (int(reports.lo), int(reports.hi)),
                              ramp)

    _at(sim, corrupt_at, corrupt)


def _one_of(sim: World, shape: Shape, shares: tuple[str, ...]) -> str:
    """One of ``shares`` (each with its share of the faults), or "" for the rest; a shape that
    gives none of them draws nothing."""
    weights = [shape.shares.get(name, 0.0) for name in shares]
    if sum(weights) <= 0.0:
        return ""
    u, edge = float(sim.rng_fault.random()), 0.0
    for name, weight in zip(shares, weights, strict=True):
        edge += weight
        if u < edge:
            return name
    return ""


def software(sim: World, f: Fault, shape: Shape) -> None:
    """Every rank exits with the same error: at once, or (in shares of the shape's faults) after
    a loss spike, a stall (the ranks spin in a collective) or a slowdown of a drawn length."""
    job = _job(sim, f)
    code, reason = SOFTWARE_FAILURES[f.variant]
    kind = _one_of(sim, shape, ("software_loss_spike", "software_stall", "software_slowdown"))
    if not kind:
        _note(shape, f, "no precursor")
        f.symptom(sim.now_us)
        sim.sched.fail(job, code, reason, f)
        sim.injector.finish(f, sim.now_us)
        return
    lead = _before_the_end(sim, job, _us(_draw(sim, shape, "software", "lead")))
    epoch = job.epoch
    job.faults.append(f)  # the job has a fault in play: no other job fault picks it
    if kind == "software_loss_spike":
        spike = _draw(sim, shape, "software", "spike")
        job.loss_factor = spike  # the first step report carrying it is the onset
        _note(shape, f, f"loss x{spike:.1f} for {lead / 6e7:.1f} min first")
    elif kind == "software_stall":
        sim.sched.hang(job, f, lead / 1e6 + 3600.0, *NCCL_WATCHDOG)
        f.symptom(sim.next_tick(sim.now_us))
        _note(shape, f, f"stalled {lead / 6e7:.1f} min first")
    else:
        slowdown = _draw(sim, shape, "software", "slowdown")
        t0 = sim.next_tick(sim.now_us)
        sim.tel.add(Overlay(f, "slow", _index(), t0, t0, clock=1.0 / (1.0 + slowdown),
                            nodes=tuple(job.nodes)))
        f.symptom(t0)
        _note(shape, f, f"steps {slowdown:.0%} slower for {lead / 6e7:.1f} min first")

    def exception() -> None:
        f.symptom(sim.now_us)
        sim.tel.clear(f)
        job.loss_factor = 1.0
        if job.epoch == epoch:
            sim.sched.fail(job, code, reason, f)
        sim.injector.finish(f, sim.now_us)

    sim.after(lead, exception)


def nccl_hang(sim: World, f: Fault, shape: Shape) -> None:
    """Step reports stop, the GPUs spin, the watchdog kills the job after its timeout; in shares
    of the shape's faults some ranks run slower first, or the job dies without the watchdog's
    line (killed, or aborted with no message)."""
    job = _job(sim, f)
    timeout_s = (_draw(sim, shape, "nccl_hang", "timeout") if shape.has("nccl_hang", "timeout")
                 else sim.config.nccl_timeout_s)
    exit_code, reason = NCCL_WATCHDOG
    if shape.chance(sim.rng_fault, "hang_no_timeout_line"):
        exit_code, reason = HANG_KILLS[int(sim.rng_fault.integers(len(HANG_KILLS)))]
        _note(shape, f, f"no timeout line ({reason})")
    hang_at = sim.now_us
    if job.nodes and shape.chance(sim.rng_fault, "hang_slow_nodes"):
        count = min(len(job.nodes), int(_draw(sim, shape, "nccl_hang", "slow_nodes")))
        picked = sim.rng_fault.choice(len(job.nodes), size=count, replace=False)
        nodes = tuple(job.nodes[int(i)] for i in picked)
        slowdown = _draw(sim, shape, "nccl_hang", "slowdown")
        job.faults.append(f)  # in play from now: no other job fault picks the job
        t0 = sim.next_tick(sim.now_us)
        sim.tel.add(Overlay(f, "slow", _index(), t0, t0, clock=1.0 / (1.0 + slowdown),
                            nodes=nodes))
        f.symptom(t0)
        hang_at = t0 + _before_the_end(sim, job, _us(_draw(sim, shape, "nccl_hang",
                                                             "slow_lead")))
        _note(shape, f, f"{count} node(s) {slowdown:.0%} slower for "
                        f"{(hang_at - t0) / 6e7:.1f} min first")
    _note(shape, f, f"timeout {timeout_s / 60:.0f} min")
    epoch = job.epoch

    def hang() -> None:
        sim.tel.clear(f)
        if job.epoch != epoch:  # the job failed first (another fault): the hang never came
            sim.injector.finish(f, sim.now_us)
            return
        if job.state != "running":  # checkpointing: the next collective hangs
            sim.after(sim.config.interval_us, hang)
            return
        sim.sched.hang(job, f, timeout_s, exit_code, reason)
        f.symptom(sim.next_tick(sim.now_us))
        f.end_us = sim.now_us + _us(timeout_s)

    _at(sim, hang_at, hang)


# ---- network ---------------------------------------------------------------------------------


def network(sim: World, f: Fault, shape: Shape) -> None:
    (_leaf_down if f.variant == "switch" else _cable)(sim, f, shape)


def _cable(sim: World, f: Fault, shape: Shape) -> None:
    tel, sched, port, node = sim.tel, sim.sched, f.port, f.node
    sim.injector.hold_nodes(f, [node])
    rail = f.gpu % sim.topo.gpus_per_node
    f.touch(sim.topo.nic_entity(node, rail))
    t0 = sim.next_tick(sim.now_us)
    errors = not shape.chance(sim.rng_fault, "precursor_missing")
    first_flap = sim.now_us
    if errors:
        first_flap = t0 + _lead(sim, shape, "network", "lead") + _jitter(sim)
    else:
        _note(shape, f, "no precursor")
    down_us = _us(max(_draw(sim, shape, "network", "down"), 1.5 * sim.config.interval_s))

    def flap_series(first: int, count: int) -> list[int]:
        flaps = [first]
        for _ in range(count - 1):
            flaps.append(flaps[-1] + down_us + _us(_draw(sim, shape, "network", "flap_gap")))
        return flaps

    # A flapping cable flaps in bursts: quiet for a while after the first (the link retrains),
    # then again, until it is replaced. Each burst is the same fault episode.
    bursts = [(t0, flap_series(first_flap, int(_draw(sim, shape, "network", "flaps"))))]
    for _ in range(int(sim.rng_fault.choice(CABLE_EXTRA_BURSTS))):
        quiet_from = bursts[-1][1][-1] + _between(sim, *CABLE_BURST_GAP_S)
        again = flap_series(quiet_from, int(sim.rng_fault.integers(1, 4)) + 1)
        bursts.append((quiet_from - _between(sim, 60, 180), again))
    if errors:
        symbol = _rates(sim, shape, "network", ("symbol_start", "symbol_end"))
        recovery = (_rates(sim, shape, "network", ("recovery_start", "recovery_end"))
                    if shape.chance(sim.rng_fault, "cable_recovery_errors") else None)
        for i, (start, burst) in enumerate(bursts):
            _precursor(sim, f, shape, "port_counter", "symbol_error", port, start, burst[-1],
                       symbol, note=i == 0)
            if recovery is not None:
                _precursor(sim, f, shape, "port_counter", "link_error_recovery", port, start,
                           burst[-1], recovery, note=i == 0)
        slowdown = _draw(sim, shape, "network", "slowdown")
        if slowdown > 1.01:
            tel.add(Overlay(f, "slow", _index(), t0, t0, clock=1.0 / slowdown, nodes=(node,)))
        f.symptom(t0)
    flaps = [t for _start, burst in bursts for t in burst]
    f.detail = (f"cable: errors for {(first_flap - t0) / 6e7:.0f} min, {len(flaps)} flaps in "
                f"{len(bursts)} burst(s)")
    f.end_us = repair_time(sim, f, flaps[-1])

    def down(first: bool, last: bool) -> None:
        tel.port_state[port] = c.PORT_STATE_DOWN
        tel.bump_port("link_downed", [port])
        f.symptom(sim.next_tick(sim.now_us))
        if first:
            tel.clear(f, "slow")
            sched.drain([node])
            code, reason = NETWORK_FAILURE
            sim.after(_us(_draw(sim, shape, "network", "fail_after")),
                      lambda: sched.fail_on([node], code, reason, f))
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


def _leaf_down(sim: World, f: Fault, shape: Shape) -> None:
    """A leaf switch dies: every port of it down (one rail of every node in the SU), in one
    scrape or (in a share) over a drawn stagger, after symbol errors on some of its ports (in
    a share); every job with a node in the SU fails a little after the first port."""
    tel, sched, topo = sim.tel, sim.sched, sim.topo
    sim.injector.busy_leaves.add(f.leaf)
    node_ports = list(topo.switch_ports(f.leaf))
    ports = node_ports + [int(topo.port_peer[p]) for p in node_ports if topo.port_peer[p] >= 0]
    rail = f.leaf % topo.gpus_per_node
    nodes = list(topo.su_nodes(f.su))
    f.detail = f"leaf switch down: rail {rail} of {len(nodes)} nodes"
    t_down = sim.now_us
    if shape.chance(sim.rng_fault, "switch_precursor"):
        t0 = sim.next_tick(sim.now_us)
        t_down = t0 + _lead(sim, shape, "network", "switch_lead") + _jitter(sim)
        share = _draw(sim, shape, "network", "switch_ports")
        count = max(1, round(share * len(node_ports)))
        noisy = sim.rng_fault.choice(node_ports, size=count, replace=False)
        rates = _rates(sim, shape, "network", ("switch_symbol_start", "switch_symbol_end"))
        for port in noisy.tolist():
            _precursor(sim, f, shape, "port_counter", "symbol_error", int(port), t0, t_down,
                       rates, note=False)
        per_hour = 3600.0 / sim.config.interval_s
        _note(shape, f, f"symbol errors on {count} of its ports first ({rates[0] * per_hour:.0f}"
                        f" -> {rates[1] * per_hour:.0f} per hour over {(t_down - t0) / 6e7:.1f}"
                        " min)")
        f.end_us = repair_time(sim, f, t_down)
    stagger = 0.0
    if shape.chance(sim.rng_fault, "switch_staggered"):
        stagger = _draw(sim, shape, "network", "switch_stagger")
        _note(shape, f, f"ports down over {stagger:.0f} s")
    offsets = [0] * len(node_ports)
    if stagger > 0:  # the first port goes down when the switch dies, the others within
        offsets = [_between(sim, 0, stagger) for _ in node_ports]
        offsets = [o - min(offsets) for o in offsets]
    f.touch(*(topo.link_entity(p) for p in ports))
    f.touch(*(topo.nic_entity(n, rail) for n in nodes))

    def ports_down(which: list[int]) -> None:
        tel.port_state[which] = c.PORT_STATE_DOWN
        tel.bump_port("link_downed", which)
        f.symptom(sim.next_tick(sim.now_us))

    def dies() -> None:
        if stagger > 0:
            for p, offset in zip(node_ports, offsets, strict=True):
                pair = [p] + ([int(topo.port_peer[p])] if topo.port_peer[p] >= 0 else [])
                _at(sim, sim.now_us + offset, lambda pair=pair: ports_down(pair))  # type: ignore[misc]
        else:
            ports_down(ports)
        sched.drain(nodes)
        code, reason = NETWORK_FAILURE
        sim.after(_us(_draw(sim, shape, "network", "switch_fail_after")),
                  lambda: sched.fail_on(nodes, code, reason, f))
        if f.end_us is None:
            f.end_us = repair_time(sim, f, sim.now_us)

        def repair() -> None:
            tel.port_state[ports] = c.PORT_STATE_ACTIVE
            sched.undrain(nodes)
            sim.injector.finish(f)

        sim.at(max(f.end_us, sim.now_us + _us(stagger) + 1), repair)

    _at(sim, t_down, dies)


def nic(sim: World, f: Fault, shape: Shape) -> None:
    tel, sched, port, node = sim.tel, sim.sched, f.port, f.node
    sim.injector.hold_nodes(f, [node])
    f.touch(sim.topo.link_entity(port))
    t_down = sim.now_us
    if shape.chance(sim.rng_fault, "precursor_missing"):
        _note(shape, f, "no precursor")
    else:
        rates = _rates(sim, shape, "nic", ("errors_start", "errors_end"))
        t0 = sim.next_tick(sim.now_us)
        t_down = t0 + _lead(sim, shape, "nic", "lead") + _jitter(sim)
        _precursor(sim, f, shape, "port_counter", "rcv_errors", port, t0, t_down, rates)
    f.end_us = repair_time(sim, f, t_down)

    def down() -> None:
        tel.clear(f)
        tel.port_state[port] = c.PORT_STATE_DOWN
        tel.bump_port("link_downed", [port])
        f.symptom(sim.next_tick(sim.now_us))
        sched.drain([node])
        code, reason = NETWORK_FAILURE
        sim.after(_us(_draw(sim, shape, "nic", "fail_after")),
                  lambda: sched.fail_on([node], code, reason, f))

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


def host_maintenance(sim: World, f: Fault, shape: Shape) -> None:
    node = f.node
    sim.injector.hold_nodes(f, [node])
    sim.emit(c.NodeMaintenanceStarted(node=sim.topo.node_names[node],
                                      reason="unplanned maintenance"))
    f.symptom(sim.now_us)
    sim.sched.drain([node])
    code, reason = MAINTENANCE_FAILURE
    sim.after(_us(_draw(sim, shape, "host_maintenance", "fail_after")),
              lambda: sim.sched.fail_on([node], code, reason, f))
    t_down = sim.now_us + _us(_draw(sim, shape, "host_maintenance", "down_after"))
    sim.at(t_down, _went_down(sim, f, node, "reboot"))
    f.end_us = max(repair_time(sim, f, sim.now_us), t_down + _us(120))
    _bring_up(sim, f, [node], maintenance=True)


def host_hw(sim: World, f: Fault, shape: Shape) -> None:
    node = f.node
    sim.injector.hold_nodes(f, [node])
    sim.tel.set_node_up(node, False)
    sim.sched.drain([node])
    first_missing = sim.next_tick(sim.now_us)  # the scrape at `now` already misses it
    f.symptom(first_missing)
    code, reason = NODE_FAILURE
    sim.after(_us(_draw(sim, shape, "host_hw", "fail_after")),
              lambda: sim.sched.fail_on([node], code, reason, f))
    t_down = first_missing + _us(_draw(sim, shape, "host_hw", "down_after"))
    sim.at(t_down, _went_down(sim, f, node, "unreachable"))
    f.end_us = repair_time(sim, f, t_down)
    _bring_up(sim, f, [node])


def rack_power(sim: World, f: Fault, shape: Shape) -> None:
    """The rack's nodes go dark in one scrape or (in the wide shapes) within a drawn stagger."""
    nodes = list(sim.topo.rack_nodes(f.rack))
    sim.injector.busy_racks.add(f.rack)
    sim.injector.hold_nodes(f, nodes)
    stagger = _draw(sim, shape, "rack_power", "stagger")
    sim.sched.drain(nodes)
    f.touch(*(sim.topo.node_entity(n) for n in nodes))

    def dark(node: int) -> None:
        sim.tel.set_node_up(node, False)
        f.symptom(sim.next_tick(sim.now_us))

    offsets = [_between(sim, 0, stagger) if stagger else 0 for _ in nodes]
    for node, offset in zip(nodes, offsets, strict=True):
        if offset:
            sim.at(sim.now_us + offset, lambda node=node: dark(node))  # type: ignore[misc]
        else:
            dark(node)
    for node, offset in zip(nodes, offsets, strict=True):
        sim.at(sim.now_us + offset + _between(sim, 1, 5), _went_down(sim, f, node, "power loss"))
    code, reason = NODE_FAILURE
    sim.after(_us(stagger + _draw(sim, shape, "rack_power", "fail_after")),
              lambda: sim.sched.fail_on(nodes, code, reason, f))
    f.end_us = repair_time(sim, f, sim.now_us + _us(stagger))
    _bring_up(sim, f, nodes, stagger_s=60)


def storage(sim: World, f: Fault, shape: Shape) -> None:
    factor = _draw(sim, shape, "storage", "slowdown")
    sim.sched.storage[f.vc] = (factor, f)
    f.detail = f"checkpoint writes {factor:.1f}x slower on {sim.topo.vc_names[f.vc]}"
    f.end_us = repair_time(sim, f, sim.now_us)

    def repair() -> None:
        sim.sched.storage.pop(f.vc, None)
        sim.injector.finish(f)

    sim.at(f.end_us, repair)


SYMPTOMS: Final[dict[str, Step]] = {
    "gpu_hw": gpu_hw, "gpu_hbm": gpu_hbm, "gpu_sram": gpu_sram, "gpu_gsp": gpu_gsp,
    "gpu_thermal": gpu_thermal, "sdc": sdc, "software": software, "nccl_hang": nccl_hang,
    "network": network, "nic": nic, "host_maintenance": host_maintenance, "host_hw": host_hw,
    "rack_power": rack_power, "cooling": cooling, "storage": storage,
}
