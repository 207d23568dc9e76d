"""What the store says about each job, summarised from the jobs projection: size, lifetime,
placements, checkpoints, failures, and the medians the replay and the recommendations use.

Read by the what-if replay (``analysis.whatif_data``), capacity (``analysis.capacity``) and the
job-level recommendations (``analysis.job_actions``). Nothing here reads the store: the facts
come from ``projections.Jobs`` (folded with the step reports: ``events.HISTORY_TYPES``), this
module only groups them per job and fills the defaults.
"""

from __future__ import annotations

import bisect
import statistics
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Final

from fleetlog.analysis.projections import JobFailure, Jobs

US: Final = 1_000_000
DEFAULT_RESTART_S: Final = 600.0  # when a job never restarted
DEFAULT_CHECKPOINT_S: Final = 60.0  # when no job in the store completed a checkpoint
# Hangs and slowdowns: nothing exits, a timeout must notice them (a crash is seen at exit).
IMPLICIT_CATEGORIES: Final = frozenset({"nccl_hang", "gpu_thermal", "sdc", "cooling", "storage"})


@dataclass
class JobHistory:
    job: str
    gpus: int = 0
    first_us: int = 0
    last_us: int = 0
    interval_s: float = 3600.0  # the checkpoint interval the job was submitted with
    checkpoint_s: float = 0.0  # median job.checkpoint_completed.duration_s (δ)
    restart_s: float = DEFAULT_RESTART_S  # median job.restarted.overhead_s
    # Where checkpoint_s and restart_s come from, for advice that quotes them: "measured" (the
    # job's own), "fleet" (the fleet's median) or "assumed" (the defaults above: no data).
    checkpoint_from: str = "measured"
    restart_from: str = "measured"
    placements: list[tuple[int, tuple[str, ...]]] = field(default_factory=list)
    failures: list[tuple[int, str]] = field(default_factory=list)  # (time, event id)
    checkpoints: list[int] = field(default_factory=list)  # completion times
    ended_us: int | None = None  # job.completed / job.cancelled
    # Where it ran: job.submitted/placed name a virtual cluster, job.migrated moves it.
    vclusters: list[tuple[int, str]] = field(default_factory=list)
    # failure event id -> overhead_s of the job.restarted that followed it (includes any wait
    # for healthy nodes: the scheduler restarts only when it has them)
    restart_after: dict[str, float] = field(default_factory=dict)
    # failure event id -> the job's last step report before it
    last_step_before: dict[str, int] = field(default_factory=dict)

    @property
    def wall_s(self) -> float:
        return max(0.0, (self.last_us - self.first_us) / US)

    def nodes_at(self, ts_us: int) -> tuple[str, ...]:
        """The nodes the job held at ``ts_us`` (the last placement before it)."""
        held: tuple[str, ...] = ()
        for start, nodes in self.placements:
            if start <= ts_us:
                held = nodes
        return held

    def last_checkpoint_before(self, ts_us: int) -> int:
        """Where the work at risk at ``ts_us`` begins: the last checkpoint completed before it,
        or the last (re)start or migration when later (it resumed from a checkpoint then)."""
        i = bisect.bisect_left(self.checkpoints, ts_us)
        since = self.checkpoints[i - 1] if i else self.first_us
        starts = [t for t, _nodes in self.placements if t < ts_us]
        return max([since, *starts])

    def vcluster_at(self, ts_us: int) -> str | None:
        here: str | None = None
        for start, vcluster in self.vclusters:
            if start <= ts_us:
                here = vcluster
        return here

    def failed_between(self, since_us: int, until_us: int) -> bool:
        return any(since_us <= t <= until_us for t, _e in self.failures)

    def running_at(self, ts_us: int) -> bool:
        return self.first_us <= ts_us and (self.ended_us is None or ts_us < self.ended_us)


def job_histories(jobs: Jobs) -> dict[str, JobHistory]:
    """Every job of the projection, by name, with what the replay and the recommendations
    need."""
    placements: dict[str, list[tuple[int, tuple[str, ...]]]] = defaultdict(list)
    for p in jobs.placements:
        if p.nodes:  # a restart naming no nodes (some schedulers' records) moves nothing
            placements[p.job].append((p.start_us, p.nodes))
    completed: dict[str, list[int]] = defaultdict(list)
    durations: dict[str, list[float]] = defaultdict(list)
    for cp in jobs.checkpoints:
        if cp.completed_us is not None:
            completed[cp.job].append(cp.completed_us)
            if cp.duration_s is not None and cp.duration_s > 0:
                durations[cp.job].append(cp.duration_s)
    failures: dict[str, list[JobFailure]] = defaultdict(list)
    for f in jobs.failures:
        failures[f.job].append(f)
    every = [d for ds in durations.values() for d in ds]
    fleet_delta = statistics.median(every) if every else DEFAULT_CHECKPOINT_S
    out: dict[str, JobHistory] = {}
    for name, info in sorted(jobs.jobs.items()):
        mine = failures[name]
        overheads = [o for o in info.restart_overheads_s if o]
        h = out[name] = JobHistory(
            name, gpus=info.gpus, first_us=info.first_us, last_us=info.last_us,
            interval_s=info.checkpoint_interval_s,
            checkpoint_s=statistics.median(durations[name]) if durations[name] else fleet_delta,
            restart_s=statistics.median(overheads) if overheads else DEFAULT_RESTART_S,
            checkpoint_from="measured" if durations[name] else "fleet" if every else "assumed",
            restart_from="measured" if overheads else "assumed",
            placements=placements[name], failures=[(f.ts_us, f.event_id) for f in mine],
            checkpoints=sorted(completed[name]), ended_us=info.ended_us,
            vclusters=list(info.vclusters),
            restart_after={f.event_id: f.restart_overhead_s for f in mine
                           if f.restart_overhead_s is not None},
            last_step_before={f.event_id: f.last_step_us for f in mine
                              if f.last_step_us is not None})
        if h.gpus <= 0 and h.placements:
            h.gpus = 8 * len(h.placements[0][1])
    return out


def fleet_restart_s(jobs: dict[str, JobHistory], exclude: Collection[str] = ()) -> float:
    """The fleet's normal restart overhead: the median recorded ``overhead_s`` of the restarts
    after the failures not in ``exclude`` (pass those that found their pool short of nodes: their
    overhead includes the wait)."""
    every = [o for h in jobs.values() for e, o in h.restart_after.items() if e not in exclude]
    if not every:
        every = [o for h in jobs.values() for o in h.restart_after.values()]
    return statistics.median(every) if every else DEFAULT_RESTART_S


def failure_start_us(h: JobHistory, fail_us: int, category: str,
                     last_step_us: int | None) -> int:
    """When a failure began: a hang or slowdown (``IMPLICIT_CATEGORIES``) at the job's last
    step report before its ``job.failed``, anything else at the ``job.failed``."""
    if (category in IMPLICIT_CATEGORIES and last_step_us is not None
            and h.first_us <= last_step_us < fail_us):
        return last_step_us
    return fail_us
