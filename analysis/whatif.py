"""What-if: replay the recorded jobs and their failures under a checkpoint/restart policy.

Each job is a wall-clock span with the failures that interrupted it. A policy decides three things:
how often the job checkpoints, how long a failure takes to be noticed, and whether a warning
(a precursor incident) lets it checkpoint just before the failure. Per failure the job loses the
work since its last checkpoint, the time until the failure is noticed, and the restart overhead;
every checkpoint costs its write time. ETTR = productive time ÷ wall time (Meta's definition).

Policies (DESIGN.md section 7, issue #7):
- ``baseline``: hourly checkpoints; a crash is noticed when the job exits, a hang only when the
  watchdog times out.
- ``daly``: Daly's interval for the job's size and measured MTBF; detection as baseline.
- ``fleetlog``: Daly's interval, detection at the time fleetlog's incidents actually fired, and a
  checkpoint-now when an incident warned early enough to finish a checkpoint first.
- ``oracle``: perfect foresight: a checkpoint completes right before each failure, which is
  noticed at once; only the restart overhead remains.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from analysis.checkpoint import daly_interval

POLICIES = ("baseline", "daly", "fleetlog", "oracle")
BASELINE_INTERVAL_S = 3600.0


@dataclass(frozen=True)
class FailureRecord:
    at_s: float  # seconds since the job's start when the fault began (first symptom)
    implicit: bool = False  # a hang or slowdown: nothing exits, a timeout must notice it
    detected_after_s: float | None = None  # fleetlog's detection delay (None: not detected)
    warned_before_s: float = 0.0  # lead time of a precursor incident before the failure


@dataclass(frozen=True)
class JobRecord:
    job: str
    gpus: int
    wall_s: float
    checkpoint_s: float  # time to write one checkpoint (δ)
    restart_s: float  # restart overhead after a failure
    failures: tuple[FailureRecord, ...] = ()


@dataclass
class PolicyResult:
    policy: str
    jobs: int = 0
    wall_gpu_h: float = 0.0
    lost_gpu_h: float = 0.0
    restarts: int = 0
    checkpoint_gpu_h: float = 0.0
    per_job: list[dict[str, float | str]] = field(default_factory=list)

    @property
    def ettr(self) -> float:
        if self.wall_gpu_h <= 0:
            return 1.0
        return max(0.0, 1.0 - (self.lost_gpu_h + self.checkpoint_gpu_h) / self.wall_gpu_h)

    def summary(self) -> dict[str, float | int | str]:
        return {
            "policy": self.policy, "jobs": self.jobs, "ettr": round(self.ettr, 4),
            "lost_gpu_hours": round(self.lost_gpu_h, 1),
            "checkpoint_gpu_hours": round(self.checkpoint_gpu_h, 1),
            "restarts": self.restarts, "wall_gpu_hours": round(self.wall_gpu_h, 1),
        }


def interval_for(policy: str, job: JobRecord, mtbf_s: float) -> float:
    if policy == "baseline":
        return BASELINE_INTERVAL_S
    return daly_interval(job.checkpoint_s, mtbf_s)


def replay_job(job: JobRecord, policy: str, *, mtbf_s: float,
               watchdog_s: float = 1800.0) -> tuple[float, float, int]:
    """(lost seconds, checkpoint seconds, restarts) for one job under one policy."""
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}: use one of {', '.join(POLICIES)}")
    interval = interval_for(policy, job, mtbf_s)
    lost = checkpointing = 0.0
    clock = 0.0  # productive progress resumes here after each restart
    restarts = 0
    for failure in sorted(job.failures, key=lambda f: f.at_s):
        if failure.at_s < clock:
            continue  # hit while already restarting: same interruption
        segment = failure.at_s - clock
        period = interval + job.checkpoint_s
        # Perfect foresight needs no periodic checkpoints: one, just before each failure.
        done = 0 if policy == "oracle" else int(segment // period)
        checkpointing += done * job.checkpoint_s
        since_checkpoint = segment - done * period
        if policy == "oracle":
            since_checkpoint, notice = 0.0, 0.0
            checkpointing += job.checkpoint_s
        else:
            notice = watchdog_s if failure.implicit else 0.0
            if policy == "fleetlog":
                if failure.detected_after_s is not None:
                    notice = min(notice, failure.detected_after_s) if failure.implicit else 0.0
                if failure.warned_before_s > job.checkpoint_s:
                    # Checkpoint-now on the warning: only the work after it is lost.
                    since_checkpoint = min(since_checkpoint,
                                           failure.warned_before_s - job.checkpoint_s)
                    checkpointing += job.checkpoint_s
        lost += since_checkpoint + notice + job.restart_s
        restarts += 1
        clock = failure.at_s + notice + job.restart_s
    if job.wall_s > clock and policy != "oracle":
        checkpointing += int((job.wall_s - clock) // (interval + job.checkpoint_s)) \
            * job.checkpoint_s
    return lost, checkpointing, restarts


def measured_mtbf_s(jobs: Sequence[JobRecord]) -> float:
    """Fleet-wide MTBF per node-second, scaled per job by its node count in ``evaluate``."""
    node_seconds = sum(j.wall_s * max(1, j.gpus // 8) for j in jobs)
    failures = sum(len(j.failures) for j in jobs)
    return node_seconds / failures if failures else float("inf")


def evaluate(jobs: Sequence[JobRecord], policies: Sequence[str] = POLICIES,
             *, watchdog_s: float = 1800.0) -> list[PolicyResult]:
    node_mtbf = measured_mtbf_s(jobs)
    results = []
    for policy in policies:
        result = PolicyResult(policy)
        for job in jobs:
            nodes = max(1, job.gpus // 8)
            mtbf = node_mtbf / nodes if node_mtbf != float("inf") else 30 * 86400.0
            lost, ckpt, restarts = replay_job(job, policy, mtbf_s=mtbf, watchdog_s=watchdog_s)
            lost = min(lost, job.wall_s)
            result.jobs += 1
            result.wall_gpu_h += job.wall_s * job.gpus / 3600
            result.lost_gpu_h += lost * job.gpus / 3600
            result.checkpoint_gpu_h += ckpt * job.gpus / 3600
            result.restarts += restarts
            result.per_job.append({"job": job.job, "lost_gpu_hours": lost * job.gpus / 3600,
                                   "interval_s": interval_for(policy, job, mtbf)})
        results.append(result)
    return results
