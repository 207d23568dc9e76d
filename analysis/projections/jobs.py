"""Jobs: the state of each job, the nodes it held over time (placements), its checkpoints,
failures and restarts, and the span of its events.

Everything the what-if replay, capacity, job actions and reports know about jobs is here;
``analysis.job_history`` only summarises it (medians, defaults). Fold the step reports too when
the span or the progress before a failure matters: without them a running job seems to end at
its last lifecycle event.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar, Final

from fleetlog.analysis.projections.projector import Handler, Projector, Transition
from fleetlog.ingest import contract as c

JOB_STATES: Final = (
    "submitted", "placed", "running", "checkpointing", "failed", "restarting", "migrated",
    "completed", "cancelled",
)


@dataclass
class Placement:
    """``job`` held ``nodes`` from ``start_us`` until ``end_us`` (None: still holds them)."""

    job: str
    nodes: tuple[str, ...]
    start_us: int
    end_us: int | None = None
    why: str = "placed"


@dataclass
class Checkpoint:
    job: str
    step: int
    started_us: int | None
    completed_us: int | None = None
    duration_s: float | None = None
    size_gb: float | None = None


@dataclass
class JobFailure:
    """One ``job.failed``."""

    job: str
    ts_us: int
    event_id: str
    exit_code: int | None  # None: the source did not say
    reason: str
    step: int
    lost_s: float | None  # None: the source does not know the job's checkpoints
    last_step_us: int | None  # the job's last step report before it: where a hang began
    # overhead_s of the job.restarted that followed it (it includes any wait for healthy
    # nodes: the scheduler restarts only when it has them); None until one records it
    restart_overhead_s: float | None = None

    @property
    def scheduler_state(self) -> str | None:
        """The scheduler's end state (``FAILED``, ``NODE_FAIL``...), None for a launcher's words."""
        return c.scheduler_state(self.reason)

    @property
    def own_account(self) -> bool:
        """The scheduler says the job ended on its own account (its code, limits, owner or
        policy): a job outcome, not a claim about the infrastructure."""
        state = self.scheduler_state
        return state is not None and state not in c.NODE_EVIDENCE_STATES


@dataclass
class JobInfo:
    job: str
    state: str
    first_us: int = 0  # its first and last event of any type (step reports included)
    last_us: int = 0
    gpus: int = 0
    vcluster: str = ""
    vclusters: list[tuple[int, str]] = field(default_factory=list)  # (since, virtual cluster)
    checkpoint_interval_s: float = 3600.0  # as submitted
    nodes: tuple[str, ...] = ()
    last_step: int = 0
    last_step_us: int | None = None
    # The step report time before ``last_step_us``: a failure stamped with the same time as
    # the last step counts its progress from this one (same-time events carry no order).
    earlier_step_us: int | None = None
    failures: int = 0
    restarts: int = 0
    restart_overheads_s: list[float] = field(default_factory=list)  # as recorded, zeros too
    migrations: int = 0
    ended_us: int | None = None  # job.completed or job.cancelled
    # The scheduler's end state of its last run (COMPLETED, FAILED, TIMEOUT, CANCELLED,
    # REQUEUED...; the ``job_outcomes`` view lists every one), None when no scheduler said.
    outcome: str | None = None


@dataclass
class Jobs:
    jobs: dict[str, JobInfo] = field(default_factory=dict)
    placements: list[Placement] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    failures: list[JobFailure] = field(default_factory=list)
    history: list[Transition] = field(default_factory=list)

    def nodes_at(self, job: str, ts_us: int) -> tuple[str, ...]:
        """The nodes ``job`` held at ``ts_us`` (the last placement starting before it)."""
        held: tuple[str, ...] = ()
        for p in self.placements:
            if p.job == job and p.start_us <= ts_us:
                held = p.nodes
        return held


class JobsProjector(Projector[Jobs]):
    def _job(self, name: str, event: c.Envelope) -> JobInfo:
        info = self.state.jobs.get(name)
        t = event.time_us
        if info is None:
            info = self.state.jobs[name] = JobInfo(job=name, state="submitted", first_us=t,
                                                   last_us=t)
        info.first_us, info.last_us = min(info.first_us, t), max(info.last_us, t)
        return info

    def _move(self, info: JobInfo, after: str, event: c.Envelope, why: str) -> None:
        if info.state != after:
            self.state.history.append(
                Transition(event.time_us, c.job_entity(info.job), info.state, after, why, event.id)
            )
            info.state = after

    def _release(self, job: str, ts_us: int) -> None:
        for p in self.state.placements:
            if p.job == job and p.end_us is None:
                p.end_us = ts_us

    def _place(self, info: JobInfo, nodes: list[str], event: c.Envelope, why: str) -> None:
        self._release(info.job, event.time_us)
        info.nodes = tuple(nodes)
        self.state.placements.append(Placement(info.job, tuple(nodes), event.time_us, None, why))

    @staticmethod
    def _runs_in(info: JobInfo, vcluster: str, event: c.Envelope) -> None:
        if vcluster:
            info.vclusters.append((event.time_us, vcluster))

    def submitted(self, payload: c.JobSubmitted, event: c.Envelope) -> None:
        info = self._job(payload.job, event)
        info.gpus, info.vcluster = payload.gpus, payload.vcluster
        info.checkpoint_interval_s = payload.checkpoint_interval_s
        self._runs_in(info, payload.vcluster, event)

    def placed(self, payload: c.JobPlaced, event: c.Envelope) -> None:
        info = self._job(payload.job, event)
        info.vcluster = payload.vcluster
        self._runs_in(info, payload.vcluster, event)
        self._place(info, payload.nodes, event, "placed")
        # Schedulers stamp "placed" and "started" with the same time (sacct's Start does), and
        # same-time events carry no order: a placement never moves a started job backwards.
        if info.state in ("submitted", "failed", "cancelled"):
            self._move(info, "placed", event, "placed")

    def started(self, payload: c.JobStarted, event: c.Envelope) -> None:
        info = self._job(payload.job, event)
        info.last_step = payload.step
        self._move(info, "running", event, "started")

    def step_reported(self, payload: c.JobStepReported, event: c.Envelope) -> None:
        info = self._job(payload.job, event)
        if info.last_step_us is not None and event.time_us > info.last_step_us:
            info.earlier_step_us = info.last_step_us
        info.last_step, info.last_step_us = payload.step, event.time_us
        if info.state in ("placed", "restarting", "migrated"):
            self._move(info, "running", event, "step reported")

    def checkpoint_started(self, payload: c.JobCheckpointStarted, event: c.Envelope) -> None:
        info = self._job(payload.job, event)
        self.state.checkpoints.append(Checkpoint(payload.job, payload.step, event.time_us))
        self._move(info, "checkpointing", event, f"checkpoint at step {payload.step}")

    def checkpoint_completed(self, payload: c.JobCheckpointCompleted, event: c.Envelope) -> None:
        info = self._job(payload.job, event)
        for cp in reversed(self.state.checkpoints):
            if cp.job == payload.job and cp.completed_us is None:
                break
        else:
            cp = Checkpoint(payload.job, payload.step, None)
            self.state.checkpoints.append(cp)
        cp.completed_us, cp.duration_s, cp.size_gb = (
            event.time_us, payload.duration_s, payload.size_gb
        )
        cp.step = payload.step
        if info.state == "checkpointing":
            self._move(info, "running", event, "checkpoint completed")

    def failed(self, payload: c.JobFailed, event: c.Envelope) -> None:
        info = self._job(payload.job, event)
        info.failures += 1
        progress = [t for t in (info.last_step_us, info.earlier_step_us)
                    if t is not None and t < event.time_us]
        self.state.failures.append(JobFailure(
            payload.job, event.time_us, event.id, payload.exit_code, payload.reason,
            payload.step, payload.lost_s, max(progress, default=None)))
        info.outcome = c.scheduler_state(payload.reason)
        self._release(payload.job, event.time_us)
        self._move(info, "failed", event, payload.reason)

    def restarted(self, payload: c.JobRestarted, event: c.Envelope) -> None:
        info = self._job(payload.job, event)
        info.restarts += 1
        info.last_step = payload.from_step
        info.restart_overheads_s.append(payload.overhead_s)
        if c.scheduler_state(payload.reason):
            info.outcome = c.scheduler_state(payload.reason)
        if payload.overhead_s:  # a restart that records no overhead says nothing of the wait
            failure = self._last_failure(payload.job)
            if failure is not None and failure.restart_overhead_s is None:
                failure.restart_overhead_s = payload.overhead_s
        self._place(info, payload.nodes, event, "restarted")
        self._move(info, "restarting", event, f"restarted from step {payload.from_step}")

    def _last_failure(self, job: str) -> JobFailure | None:
        return next((f for f in reversed(self.state.failures) if f.job == job), None)

    def migrated(self, payload: c.JobMigrated, event: c.Envelope) -> None:
        info = self._job(payload.job, event)
        info.migrations += 1
        info.vcluster = payload.to_vcluster
        self._runs_in(info, payload.to_vcluster, event)
        self._place(info, payload.nodes, event, "migrated")
        self._move(info, "migrated", event, f"{payload.from_vcluster} -> {payload.to_vcluster}")

    def completed(self, payload: c.JobCompleted, event: c.Envelope) -> None:
        info = self._job(payload.job, event)
        info.last_step = payload.step
        info.ended_us = event.time_us
        info.outcome = "COMPLETED"
        self._release(payload.job, event.time_us)
        self._move(info, "completed", event, "completed")

    def cancelled(self, payload: c.JobCancelled, event: c.Envelope) -> None:
        info = self._job(payload.job, event)
        info.ended_us = event.time_us
        info.outcome = "CANCELLED"
        self._release(payload.job, event.time_us)
        self._move(info, "cancelled", event, payload.reason or "cancelled")

    HANDLERS: ClassVar[dict[type[c.Payload], Handler]] = {
        c.JobSubmitted: submitted, c.JobPlaced: placed, c.JobStarted: started,
        c.JobStepReported: step_reported, c.JobCheckpointStarted: checkpoint_started,
        c.JobCheckpointCompleted: checkpoint_completed, c.JobFailed: failed,
        c.JobRestarted: restarted, c.JobMigrated: migrated, c.JobCompleted: completed,
        c.JobCancelled: cancelled,
    }


def fold_jobs(events: Iterable[c.Envelope], start: Jobs | None = None) -> Jobs:
    return JobsProjector(copy.deepcopy(start) if start is not None else Jobs()).fold(events)
