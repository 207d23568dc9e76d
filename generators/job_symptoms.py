"""What the job-level categories do (``sdc``, ``software``, ``nccl_hang``): no hardware signal,
the job's own step reports and exit (docs/faults.md). Each takes the fault's ``Shape``: the
template's one look, or the wide shapes' precursors, lags and magnitudes."""

from __future__ import annotations

from typing import Final

from fleetlog.generators.faults import Fault
from fleetlog.generators.jobs import Job
from fleetlog.generators.shapes import Shape
from fleetlog.generators.steps import (
    add_note,
    at_or_now,
    draw,
    indices,
    us,
)
from fleetlog.generators.telemetry import Overlay
from fleetlog.generators.world import World

SOFTWARE_FAILURES: Final = {
    "runtime_error": (1, "RuntimeError: expected all tensors to be on the same device"),
    "oom": (1, "OOM: out of memory while allocating activations"),
    "import_error": (1, "ImportError: cannot import name 'fused_rms_norm' from 'kernels'"),
    "segfault": (139, "Segmentation fault (core dumped)"),
}
NCCL_WATCHDOG: Final = (-6, "NCCL watchdog timeout")
# a hang that ends without the watchdog's line: killed by the scheduler or an operator, or aborted
HANG_KILLS: Final = ((137, "Killed"), (-6, "Aborted (core dumped)"))


def _job(sim: World, f: Fault) -> Job:
    assert f.job >= 0, f"{f.category} fault without a target job"
    return sim.sched.jobs[f.job]


def _before_the_end(sim: World, job: Job, lead_us: int) -> int:
    """``lead_us``, cut to half the steps the job has left (at its usual pace), so a precursor
    ends in the fault it announces and not in the job completing first."""
    if job.total_steps is None:
        return lead_us
    left_us = (job.total_steps - job.progress) * job.base_step_s * 1e6
    return max(us(1.0), min(lead_us, round(left_us / 2)))


def _job_gpu(sim: World, job: Job) -> int:
    """One GPU of the job's, drawn."""
    node = job.nodes[int(sim.rng_fault.integers(len(job.nodes)))]
    return node * sim.topo.gpus_per_node + int(sim.rng_fault.integers(sim.topo.gpus_per_node))


def sdc(sim: World, f: Fault, shape: Shape) -> None:
    """The job's loss goes bad (by a drawn factor, at once or over a few reports, or NaN) until
    a check fails it; in a share, one of its GPUs corrected a few SRAM errors minutes before (a
    hint no detector may take for the cause: corrected errors are not a fault)."""
    job = _job(sim, f)
    low = draw(sim, shape, "sdc", "factor_low")
    high = max(low, draw(sim, shape, "sdc", "factor_high"))
    reports = shape.ranges["sdc"]["reports"]
    ramp = int(draw(sim, shape, "sdc", "ramp"))
    if f.variant != "nan":
        add_note(shape, f, f"loss x{low:.1f}-{high:.1f} reached over {ramp} report(s)")
    corrupt_at = sim.now_us
    if job.nodes and shape.chance(sim.rng_fault, "sdc_sram_hint"):
        gpu = _job_gpu(sim, job)
        sim.tel.bump("sram_ecc_total", [gpu], float(sim.rng_fault.integers(1, 4)))
        corrupt_at += _before_the_end(sim, job, us(draw(sim, shape, "sdc", "hint_lead")))
        job.faults.append(f)  # in play from now: no other job fault picks the job
        add_note(shape, f, f"SRAM corrections on {sim.topo.gpu_entity(gpu)} "
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

    at_or_now(sim, corrupt_at, corrupt)


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
        add_note(shape, f, "no precursor")
        f.symptom(sim.now_us)
        sim.sched.fail(job, code, reason, f)
        sim.injector.finish(f, sim.now_us)
        return
    lead = _before_the_end(sim, job, us(draw(sim, shape, "software", "lead")))
    epoch = job.epoch
    job.faults.append(f)  # the job has a fault in play: no other job fault picks it
    if kind == "software_loss_spike":
        spike = draw(sim, shape, "software", "spike")
        job.loss_factor = spike  # the first step report carrying it is the onset
        add_note(shape, f, f"loss x{spike:.1f} for {lead / 6e7:.1f} min first")
    elif kind == "software_stall":
        sim.sched.hang(job, f, lead / 1e6 + 3600.0, *NCCL_WATCHDOG)
        f.symptom(sim.next_tick(sim.now_us))
        add_note(shape, f, f"stalled {lead / 6e7:.1f} min first")
    else:
        slowdown = draw(sim, shape, "software", "slowdown")
        t0 = sim.next_tick(sim.now_us)
        sim.tel.add(Overlay(f, "slow", indices(), t0, t0, clock=1.0 / (1.0 + slowdown),
                            nodes=tuple(job.nodes)))
        f.symptom(t0)
        add_note(shape, f, f"steps {slowdown:.0%} slower for {lead / 6e7:.1f} min first")

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
    timeout_s = (draw(sim, shape, "nccl_hang", "timeout") if shape.has("nccl_hang", "timeout")
                 else sim.config.nccl_timeout_s)
    exit_code, reason = NCCL_WATCHDOG
    if shape.chance(sim.rng_fault, "hang_no_timeout_line"):
        exit_code, reason = HANG_KILLS[int(sim.rng_fault.integers(len(HANG_KILLS)))]
        add_note(shape, f, f"no timeout line ({reason})")
    hang_at = sim.now_us
    if job.nodes and shape.chance(sim.rng_fault, "hang_slow_nodes"):
        count = min(len(job.nodes), int(draw(sim, shape, "nccl_hang", "slow_nodes")))
        picked = sim.rng_fault.choice(len(job.nodes), size=count, replace=False)
        nodes = tuple(job.nodes[int(i)] for i in picked)
        slowdown = draw(sim, shape, "nccl_hang", "slowdown")
        job.faults.append(f)  # in play from now: no other job fault picks the job
        t0 = sim.next_tick(sim.now_us)
        sim.tel.add(Overlay(f, "slow", indices(), t0, t0, clock=1.0 / (1.0 + slowdown),
                            nodes=nodes))
        f.symptom(t0)
        hang_at = t0 + _before_the_end(sim, job, us(draw(sim, shape, "nccl_hang",
                                                             "slow_lead")))
        add_note(shape, f, f"{count} node(s) {slowdown:.0%} slower for "
                        f"{(hang_at - t0) / 6e7:.1f} min first")
    add_note(shape, f, f"timeout {timeout_s / 60:.0f} min")
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
        f.end_us = sim.now_us + us(timeout_s)

    at_or_now(sim, hang_at, hang)
