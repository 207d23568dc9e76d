"""What-if: replay the recorded jobs and their failures under a checkpoint/restart policy.

Each job is a wall-clock span with the failures that interrupted it. A policy decides three things:
how often the job checkpoints, how long a failure takes to be noticed, and whether a warning
(a precursor incident) lets it checkpoint just before the failure. Per failure the job loses the
work since its last checkpoint, the time until the failure is noticed, and the restart overhead;
every checkpoint costs its write time. ETTR = productive time ÷ wall time (Meta's definition).

Policies (docs/design.md#checkpoint-math, issue #7):
- ``baseline``: hourly checkpoints; a crash is noticed when the job exits, a hang only when the
  watchdog times out.
- ``daly``: Daly's interval for the job's size and measured MTBF; detection as baseline.
- ``fleetlog``: Daly's interval for the MTBF of the failures no warning covered (the others cost
  a checkpoint-now, not periodic rework), detection at the time fleetlog's incidents fired, a
  checkpoint-now when an incident warned early enough to finish a checkpoint first (then, when
  the warning sat on one node and a healthy spare was idle, a restart from that checkpoint
  without the suspect node: the failure never reaches the job), one checkpoint (and the swap's
  restart) for every false alarm, and a migration (``MIGRATE_S`` on top of the restart) instead
  of the recorded wait for healthy nodes when fleetlog saw the job's virtual cluster short of
  them and another one with room.
- ``oracle``: perfect foresight: a checkpoint completes right before each failure, which is
  noticed at once; the restart overhead remains, and the shorter of the recorded wait for nodes
  and a migration (when another virtual cluster had room).

The recorded wait for nodes (``FailureRecord.wait_s``) is what the store's scheduler actually
waited: baseline and daly wait the same (the recorded scheduler never migrates on its own).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from fleetlog.analysis.checkpoint import (
    daly_interval,
    expected_loss_fraction,
    job_mtbf_s,
    lead_covers_checkpoint,
    node_count,
    node_mtbf_s,
)

POLICIES = ("baseline", "daly", "fleetlog", "oracle")
BASELINE_INTERVAL_S = 3600.0
NO_FAILURE_MTBF_S = 30 * 86400.0  # a job's MTBF when the store holds no failure to measure
# Extra time a migration takes over a local restart: the checkpoint read from the other virtual
# cluster's storage and the scheduler's move. An assumption (the simulator's move takes
# 60-180 s; cross-cluster moves in production are slower), stated so it can be challenged.
# The replay charges it, and the job actions (``analysis.job_actions``) weigh it against the
# expected wait for a repair (``analysis.capacity``).
MIGRATE_S: Final = 300.0


@dataclass(frozen=True)
class Alarm:
    """A precursor on a job's nodes that no failure of the job followed (``analysis.precursors``):
    acting on it costs a checkpoint (and a restart, for a swap) and saves nothing."""

    at_s: float  # detection, seconds since the job's start
    swap: bool  # fleetlog would swap the suspect node out (one node, a healthy spare at hand)


@dataclass(frozen=True)
class FailureRecord:
    at_s: float  # seconds since the job's start when the fault began (first symptom)
    implicit: bool = False  # a hang or slowdown: nothing exits, a timeout must notice it
    detected_after_s: float | None = None  # fleetlog's detection delay (None: not detected)
    warned_before_s: float = 0.0  # lead time of a precursor incident before the failure
    wait_s: float = 0.0  # recorded wait for healthy nodes beyond the job's normal restart
    migrate: bool = False  # fleetlog saw its pool short with room elsewhere: it migrates
    movable: bool = False  # another virtual cluster had room for the whole job then
    swap: bool = False  # the warning sat on one node with a healthy spare at hand


@dataclass(frozen=True)
class JobRecord:
    job: str
    gpus: int
    wall_s: float
    checkpoint_s: float  # time to write one checkpoint (δ)
    restart_s: float  # restart overhead after a failure
    failures: tuple[FailureRecord, ...] = ()
    alarms: tuple[Alarm, ...] = ()  # precursors that no failure followed (false alarms)


@dataclass
class PolicyResult:
    policy: str
    jobs: int = 0
    wall_gpu_h: float = 0.0
    lost_gpu_h: float = 0.0
    restarts: int = 0
    checkpoint_gpu_h: float = 0.0
    # lost_gpu_h split: rework since the last checkpoint, time until noticed, restarts and waits
    rework_gpu_h: float = 0.0
    notice_gpu_h: float = 0.0
    restart_gpu_h: float = 0.0
    swaps: int = 0
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
            "rework_gpu_hours": round(self.rework_gpu_h, 1),
            "notice_gpu_hours": round(self.notice_gpu_h, 1),
            "restart_gpu_hours": round(self.restart_gpu_h, 1),
            "restarts": self.restarts, "swaps": self.swaps,
            "wall_gpu_hours": round(self.wall_gpu_h, 1),
        }


def interval_for(policy: str, job: JobRecord, mtbf_s: float) -> float:
    if policy == "baseline":
        return BASELINE_INTERVAL_S
    return daly_interval(job.checkpoint_s, mtbf_s)


def restart_wait_s(policy: str, failure: FailureRecord, migrate_s: float = MIGRATE_S) -> float:
    """What a restart adds to the normal overhead: the wait for nodes, or the move instead."""
    if policy == "fleetlog" and failure.migrate:
        return migrate_s
    if policy == "oracle" and failure.swap:
        return 0.0  # foresight swaps the node out before, onto the spare that was idle then
    if policy == "oracle" and failure.movable:
        return min(failure.wait_s, migrate_s)
    return failure.wait_s


@dataclass
class Losses:
    """Where one job's time went under one policy, in seconds."""

    rework_s: float = 0.0  # work since the last checkpoint, done again
    notice_s: float = 0.0  # a hang or slowdown running until noticed
    restart_s: float = 0.0  # restart overhead, waits for nodes, migrations
    checkpoint_s: float = 0.0  # time spent writing checkpoints
    restarts: int = 0
    swaps: int = 0  # suspect nodes swapped out on a warning (planned restarts)

    @property
    def lost_s(self) -> float:
        return self.rework_s + self.notice_s + self.restart_s


def replay_losses(job: JobRecord, policy: str, *, mtbf_s: float,
                  watchdog_s: float = 1800.0) -> Losses:
    """Replay one job's failures under one policy."""
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}: use one of {', '.join(POLICIES)}")
    interval = interval_for(policy, job, mtbf_s)
    out = Losses()
    clock = 0.0  # productive progress resumes here after each restart
    for failure in sorted(job.failures, key=lambda f: f.at_s):
        if failure.at_s < clock:
            continue  # hit while already restarting: same interruption
        swap = policy == "fleetlog" and foreseen(job, failure)
        # A swap stops the job at the warning, checkpoint first; the failure comes too late.
        stop = max(clock, failure.at_s - failure.warned_before_s) if swap else failure.at_s
        segment = stop - clock
        period = interval + job.checkpoint_s
        # Perfect foresight needs no periodic checkpoints: one, just before each failure.
        done = 0 if policy == "oracle" else int(segment // period)
        out.checkpoint_s += done * job.checkpoint_s
        since_checkpoint = segment - done * period
        if policy == "oracle" or swap:
            since_checkpoint, notice = 0.0, 0.0
            out.checkpoint_s += job.checkpoint_s
        else:
            notice = watchdog_s if failure.implicit else 0.0
            if policy == "fleetlog":
                if failure.detected_after_s is not None:
                    notice = min(notice, failure.detected_after_s) if failure.implicit else 0.0
                if warned_in_time(job, failure):
                    # Checkpoint-now on the warning: only the work after it is lost.
                    since_checkpoint = min(since_checkpoint,
                                           failure.warned_before_s - job.checkpoint_s)
                    out.checkpoint_s += job.checkpoint_s
        # A swap restarts on the spare it found idle: no wait for nodes.
        restart = job.restart_s + (0.0 if swap else restart_wait_s(policy, failure))
        out.rework_s += since_checkpoint
        out.notice_s += notice
        out.restart_s += restart
        out.restarts += 1
        out.swaps += swap
        clock = stop + (job.checkpoint_s if swap else notice) + restart
    if policy == "fleetlog":
        for alarm in job.alarms:  # acted on, for nothing
            out.checkpoint_s += job.checkpoint_s
            out.restart_s += job.restart_s if alarm.swap else 0.0
            out.swaps += alarm.swap
    if job.wall_s > clock and policy != "oracle":
        out.checkpoint_s += int((job.wall_s - clock) // (interval + job.checkpoint_s)) \
            * job.checkpoint_s
    return out


def replay_job(job: JobRecord, policy: str, *, mtbf_s: float,
               watchdog_s: float = 1800.0) -> tuple[float, float, int]:
    """(lost seconds, checkpoint seconds, restarts) for one job under one policy."""
    out = replay_losses(job, policy, mtbf_s=mtbf_s, watchdog_s=watchdog_s)
    return out.lost_s, out.checkpoint_s, out.restarts


def foreseen(job: JobRecord, failure: FailureRecord) -> bool:
    """fleetlog swaps the suspect node out before this failure: a warning on one node, early
    enough for a checkpoint, and a healthy spare idle."""
    return failure.swap and warned_in_time(job, failure)


def measured_mtbf_s(jobs: Sequence[JobRecord], *, unwarned: bool = False) -> float:
    """Fleet-wide MTBF per node-second, scaled per job by its node count in ``evaluate``.

    ``unwarned``: count only the failures no warning covered (a precursor early enough for a
    checkpoint to complete first). Those are the ones periodic checkpoints are for — a covered
    failure costs a checkpoint-now, not the work since the last periodic one — so the fleetlog
    policy sets Daly's interval from their MTBF (``analysis.job_actions`` recommends the same).
    """
    failures = sum(1 for j in jobs for f in j.failures
                   if not (unwarned and warned_in_time(j, f)))
    return node_mtbf_s(((j.wall_s, j.gpus) for j in jobs), failures)


def warned_in_time(job: JobRecord, failure: FailureRecord) -> bool:
    """A precursor warned early enough for a checkpoint-now to complete before the failure."""
    return lead_covers_checkpoint(failure.warned_before_s, job.checkpoint_s)


def record_mtbf_s(job: JobRecord, node_mtbf_s: float) -> float:
    """The job's MTBF from the fleet's per-node MTBF (8 GPUs a node)."""
    if node_mtbf_s == float("inf"):
        return NO_FAILURE_MTBF_S
    return job_mtbf_s(node_mtbf_s, node_count(job.gpus))


def expected_periodic_loss(jobs: Sequence[JobRecord], node_mtbf_s: float, *,
                           speedup: float = 1.0) -> float:
    """Share of the jobs' GPU time that checkpointing on a schedule costs in expectation:
    checkpoint writes plus the work redone after a failure, each job at Daly's interval for its
    MTBF (first order, ``analysis.checkpoint.expected_loss_fraction``), with every checkpoint
    ``speedup`` times faster.

    With ``node_mtbf_s`` from the failures no warning covered, this is the part of the gap to
    the oracle that no policy without foresight avoids: the oracle writes one checkpoint just
    before each failure and redoes nothing; restarts cost every policy the same.
    """
    wall = sum(job.wall_s * job.gpus for job in jobs)
    if wall <= 0:
        return 0.0
    lost = 0.0
    for job in jobs:
        mtbf = record_mtbf_s(job, node_mtbf_s)
        delta = job.checkpoint_s / speedup
        share = expected_loss_fraction(daly_interval(delta, mtbf), delta, 0.0, mtbf)
        lost += share * job.wall_s * job.gpus
    return lost / wall


def checkpoint_speedup_for(jobs: Sequence[JobRecord], node_mtbf_s: float,
                           loss: float) -> float | None:
    """How many times faster checkpoints must get for ``expected_periodic_loss`` to fall to
    ``loss`` (1.0: it already does; None: not even 10,000 times faster would do)."""
    if expected_periodic_loss(jobs, node_mtbf_s) <= loss:
        return 1.0
    low, high = 1.0, 10_000.0
    if expected_periodic_loss(jobs, node_mtbf_s, speedup=high) > loss:
        return None
    while high / low > 1.001:  # the loss falls monotonically as checkpoints get faster
        middle = (low * high) ** 0.5
        if expected_periodic_loss(jobs, node_mtbf_s, speedup=middle) > loss:
            low = middle
        else:
            high = middle
    return high


def evaluate(jobs: Sequence[JobRecord], policies: Sequence[str] = POLICIES,
             *, watchdog_s: float = 1800.0) -> list[PolicyResult]:
    node_mtbf = {False: measured_mtbf_s(jobs), True: measured_mtbf_s(jobs, unwarned=True)}
    results = []
    for policy in policies:
        result = PolicyResult(policy)
        per_node = node_mtbf[policy == "fleetlog"]
        for job in jobs:
            mtbf = record_mtbf_s(job, per_node)
            out = replay_losses(job, policy, mtbf_s=mtbf, watchdog_s=watchdog_s)
            # A job cannot lose more than its wall time (a failure storm at its very end).
            scale = min(1.0, job.wall_s / out.lost_s) if out.lost_s > 0 else 1.0
            gpu_h = job.gpus / 3600
            lost = out.lost_s * scale
            result.jobs += 1
            result.wall_gpu_h += job.wall_s * gpu_h
            result.lost_gpu_h += lost * gpu_h
            result.rework_gpu_h += out.rework_s * scale * gpu_h
            result.notice_gpu_h += out.notice_s * scale * gpu_h
            result.restart_gpu_h += out.restart_s * scale * gpu_h
            result.checkpoint_gpu_h += out.checkpoint_s * gpu_h
            result.restarts += out.restarts
            result.swaps += out.swaps
            result.per_job.append({"job": job.job, "lost_gpu_hours": lost * gpu_h,
                                   "interval_s": interval_for(policy, job, mtbf)})
        results.append(result)
    return results
