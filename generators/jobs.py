"""Training jobs: what a job is, the job mix, and how job parameters follow job size.

Sizes are in nodes (8 GPUs each by default). The initial mix of a virtual cluster fills ~90 % of
its non-spare nodes with one large job (40-60 % of the capacity: hundreds to thousands of GPUs)
and many small ones (sizes weighted towards 1-2 nodes). Model size, step time, checkpoint
interval and run length grow with the job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import numpy as np

from fleetlog.generators.faults import Fault
from fleetlog.ingest import contract as c

FILL_SHARE: Final = 0.9  # of a virtual cluster's non-spare nodes the initial jobs take
_SMALL_SIZES: Final = (1, 2, 4, 8, 16, 32, 64, 128)


@dataclass(eq=False)
class Job:
    id: str
    slot: int
    vc: int
    size: int  # nodes
    gpus: int
    params_b: float
    ckpt_interval_s: float
    base_step_s: float
    compute_share: float
    tokens_per_step: float
    fb_mib: float
    total_steps: int | None  # None: runs past the window
    nodes: list[int] = field(default_factory=list)
    state: str = "pending"  # pending starting running checkpointing hung restarting migrating done
    progress: float = 0.0  # steps, fractional
    updated_us: int = 0
    slowdown: float = 1.0
    last_ckpt_step: int = 0
    last_ckpt_us: int = 0
    resumed_us: int = 0
    failed_us: int = 0
    reported_step: int = -1
    reported_us: int = 0
    epoch: int = 0
    faults: list[Fault] = field(default_factory=list)  # job-level faults (sdc, hang) in play
    ckpt_fault: Fault | None = None  # storage fault slowing the checkpoint in flight
    sdc_mode: str = ""
    sdc_since_us: int = 0
    sdc_reports: int = 0
    sdc_fail_after: int = 0
    sdc_factor: tuple[float, float] = (1.0, 1.0)  # the bad loss: true loss times a factor in it
    sdc_ramp: int = 1  # reports over which the factor is reached (1: at once)
    loss_factor: float = 1.0  # a loss spike that is not SDC (a software fault's precursor)
    pid: int = 0

    @property
    def entity(self) -> str:
        return c.job_entity(self.id)

    @property
    def checkpoint_gb(self) -> float:
        return self.params_b * 14.0  # bf16 weights + fp32 master weights + Adam moments

    def checkpoint_s(self) -> float:
        """Healthy duration: fixed cost plus size over the job's share of storage bandwidth."""
        return 20.0 + self.checkpoint_gb / min(0.5 * self.size, 50.0)


@dataclass
class WorkloadStats:
    jobs: int = 0
    failures: int = 0
    restarts: int = 0
    migrations: int = 0
    migrations_refused: int = 0
    completed: int = 0
    lost_gpu_hours: float = 0.0  # work since the last checkpoint plus restart overhead


def job_mix(capacity: int, rng: np.random.Generator) -> list[int]:
    """Job sizes (nodes) filling ~90 % of ``capacity``: one large job, many small ones."""
    remaining = int(capacity * FILL_SHARE)
    sizes: list[int] = []
    if capacity >= 32:
        large = int(capacity * rng.uniform(0.4, 0.6))
        sizes.append(large)
        remaining -= large
    while remaining > 0:
        sizes.append(draw_small_size(remaining, rng))
        remaining -= sizes[-1]
    return sizes


def draw_small_size(limit: int, rng: np.random.Generator) -> int:
    choices = [s for s in _SMALL_SIZES if s <= max(1, limit)]
    weights = np.asarray([s ** -0.8 for s in choices])
    return choices[int(rng.choice(len(choices), p=weights / weights.sum()))]


def loss_curve(step: float) -> float:
    """Training loss at ``step`` (a smooth power-law decay)."""
    return 1.6 + 8.0 / float((1.0 + step / 400.0) ** 0.35)




def make_job(slot: int, vc: int, size: int, gpus_per_node: int, rng: np.random.Generator, *,
             steady: bool) -> Job:
    """A job of ``size`` nodes; ``steady``: it has been running a while when the window opens."""
    gpus = size * gpus_per_node
    if gpus <= 8:
        params, step = float(rng.choice([1.0, 3.0, 7.0, 8.0])), rng.uniform(0.4, 1.5)
    elif gpus <= 64:
        params, step = float(rng.choice([7.0, 8.0, 13.0])), rng.uniform(0.8, 3.0)
    elif gpus <= 512:
        params, step = float(rng.choice([13.0, 34.0, 70.0])), rng.uniform(2.0, 6.0)
    elif gpus <= 4096:
        params, step = float(rng.choice([70.0, 175.0])), rng.uniform(4.0, 9.0)
    else:
        params, step = 405.0, rng.uniform(6.0, 12.0)
    hours = None
    if gpus <= 64:
        hours = rng.uniform(1.0, 12.0)
    elif gpus <= 512:
        hours = rng.uniform(6.0, 48.0)
    job = Job(
        id=f"j{slot + 1:04d}", slot=slot, vc=vc, size=size, gpus=gpus, params_b=params,
        ckpt_interval_s=60.0 * int(rng.integers(20, 61)), base_step_s=float(step),
        compute_share=float(rng.uniform(0.6, 0.85)),
        tokens_per_step=float(gpus * 1024 * int(rng.choice([1, 2, 4]))),
        fb_mib=float(np.rint(rng.uniform(52_000, 78_000))),
        total_steps=None if hours is None else int(hours * 3600 / step),
        pid=int(rng.integers(10_000, 4_000_000)),
    )
    if steady:
        job.progress = float(int(rng.integers(1_000, 200_000)))
        job.last_ckpt_step = int(job.progress)  # it resumes from here if it dies before starting
        if job.total_steps is not None:
            job.total_steps += int(job.progress)
    return job
