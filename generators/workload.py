"""The scheduler: placement, steps, checkpoints, failures, restarts, migration.

Jobs are synchronous data parallel: every step waits for the slowest rank, so one throttled GPU or
one erroring link slows the whole job (``Job.slowdown``). Each scrape a running job reports its
latest step (step time, tokens/s, loss). Checkpoints pause training for a duration set by the model
size and the storage's health. A failed job loses the work since its last completed checkpoint
(``JobFailed.lost_s``) and restarts after ``restart_overhead_s`` from that checkpoint, keeping its
healthy nodes and taking spares (then idle nodes) of its virtual cluster for the others. A migration
pauses the job, checkpoints, moves it to another virtual cluster and resumes it there. Finished
jobs are replaced by new small ones, so the cluster stays busy.

Callbacks scheduled for a job carry its ``epoch``; a failure bumps the epoch, so stale callbacks
(a checkpoint that was running when the job died) do nothing.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np

from fleetlog.generators.faults import Fault
from fleetlog.generators.jobs import (
    Job,
    WorkloadStats,
    draw_small_size,
    job_mix,
    loss_curve,
    make_job,
)
from fleetlog.generators.telemetry import (
    PHASE_CKPT,
    PHASE_COMM,
    PHASE_COMPUTE,
    PHASE_HANG,
    PHASE_IDLE,
)
from fleetlog.generators.world import NodeArray, World
from fleetlog.ingest import contract as c

_US: Final = 1_000_000
RETRY_US: Final = 60 * _US


class Scheduler:
    def __init__(self, sim: World) -> None:
        self.sim = sim
        self.topo = sim.topo
        self.tel = sim.tel
        self.rng = sim.rng_work
        self.config = sim.config
        n = self.topo.n_nodes
        self.jobs: list[Job] = []
        self.active: list[Job] = []
        self.node_job: NodeArray = np.full(n, -1, dtype=np.int32)
        self.drained: NodeArray = np.zeros(n, dtype=np.int32)
        n_vcs = len(self.topo.vc_names)
        self.spares: list[set[int]] = [set() for _ in range(n_vcs)]
        self.free: list[set[int]] = [set() for _ in range(n_vcs)]
        for node in range(n):
            vc = int(self.topo.node_vc[node])
            (self.spares if self.topo.node_spare[node] else self.free)[vc].add(node)
        self.spare_target = [len(s) for s in self.spares]
        self.storage: dict[int, tuple[float, Fault]] = {}
        self.stats = WorkloadStats()

    # ---- nodes ----------------------------------------------------------------------------

    def healthy(self, node: int) -> bool:
        return bool(self.tel.node_up[node]) and self.drained[node] == 0

    def _pool_add(self, node: int) -> None:
        vc = int(self.topo.node_vc[node])
        if len(self.spares[vc]) < self.spare_target[vc]:
            self.spares[vc].add(node)
        else:
            self.free[vc].add(node)

    def _assign(self, job: Job, nodes: list[int]) -> None:
        for node in nodes:
            vc = int(self.topo.node_vc[node])
            self.free[vc].discard(node)
            self.spares[vc].discard(node)
            self.node_job[node] = job.slot
            self.tel.assign(node, job.slot)

    def _release(self, nodes: list[int]) -> None:
        for node in nodes:
            self.node_job[node] = -1
            self.tel.assign(node, -1)
            if self.healthy(node):
                self._pool_add(node)

    def drain(self, nodes: list[int]) -> None:
        """Take nodes out of scheduling (a fault was seen); jobs on them are failed separately."""
        for node in nodes:
            self.drained[node] += 1
            vc = int(self.topo.node_vc[node])
            self.free[vc].discard(node)
            self.spares[vc].discard(node)

    def undrain(self, nodes: list[int]) -> None:
        for node in nodes:
            self.drained[node] = max(0, self.drained[node] - 1)
            if self.healthy(node) and self.node_job[node] < 0:
                self._pool_add(node)

    def jobs_on(self, nodes: list[int] | range) -> list[Job]:
        slots = sorted({int(self.node_job[n]) for n in nodes} - {-1})
        return [self.jobs[s] for s in slots]

    # ---- jobs -----------------------------------------------------------------------------

    def _new_job(self, vc: int, size: int, *, steady: bool) -> Job:
        slot = len(self.jobs)
        self.tel.ensure_slots(slot + 1)
        job = make_job(slot, vc, size, self.topo.gpus_per_node, self.rng, steady=steady)
        self.tel.slot_fb[slot + 1] = job.fb_mib
        self.jobs.append(job)
        self.active.append(job)
        self.stats.jobs += 1
        return job

    def bootstrap(self) -> None:
        """The initial job mix of every virtual cluster, submitted and placed at the start."""
        for vc in range(len(self.free)):
            for size in job_mix(len(self.free[vc]), self.rng):
                self.submit(self._new_job(vc, size, steady=True), start_within_s=30.0)

    def submit(self, job: Job, *, start_within_s: float = 60.0) -> None:
        self.sim.emit(c.JobSubmitted(
            job=job.id, gpus=job.gpus, vcluster=self.topo.vc_names[job.vc],
            model_params_b=job.params_b, checkpoint_interval_s=job.ckpt_interval_s,
        ))
        self._try_place(job, job.epoch, start_within_s)

    def _try_place(self, job: Job, epoch: int, start_within_s: float = 60.0) -> None:
        if epoch != job.epoch or job.state != "pending":
            return
        pool = sorted(self.free[job.vc])
        if len(pool) < job.size:
            self.sim.after(RETRY_US, lambda: self._try_place(job, epoch, start_within_s))
            return
        job.nodes = pool[:job.size]
        self._assign(job, job.nodes)
        job.state = "starting"
        self.sim.emit(c.JobPlaced(job=job.id, nodes=self._names(job.nodes),
                                  vcluster=self.topo.vc_names[job.vc]))
        delay = round(self.rng.uniform(1.0, start_within_s) * _US)
        self.sim.after(delay, lambda: self._start(job, epoch))

    def _start(self, job: Job, epoch: int) -> None:
        if epoch != job.epoch or job.state != "starting":
            return
        now = self.sim.now_us
        job.state = "running"
        job.updated_us = job.resumed_us = job.last_ckpt_us = job.reported_us = now
        job.last_ckpt_step = job.reported_step = int(job.progress)
        self.sim.emit(c.JobStarted(job=job.id, step=int(job.progress)))
        first = self.rng.uniform(0.1, 1.0) * job.ckpt_interval_s
        self._schedule_checkpoint(job, round(first * _US))

    def _names(self, nodes: list[int]) -> list[str]:
        return [self.topo.node_names[n] for n in nodes]

    def _advance(self, job: Job, t_us: int) -> None:
        if job.state == "running" and t_us > job.updated_us:
            job.progress += (t_us - job.updated_us) / _US / (job.base_step_s * job.slowdown)
        job.updated_us = max(job.updated_us, t_us)

    def _resume(self, job: Job, step: int) -> None:
        """Training continues from ``step`` now (after a restart or a migration)."""
        now = self.sim.now_us
        job.epoch += 1  # timers of the previous run (its checkpoint schedule) lapse
        job.state = "running"
        job.progress = float(step)
        job.updated_us = job.resumed_us = job.reported_us = now
        job.reported_step = step
        self._schedule_checkpoint(job, round(job.ckpt_interval_s * _US))

    # ---- checkpoints ----------------------------------------------------------------------

    def _schedule_checkpoint(self, job: Job, delay_us: int, migrate_to: int | None = None) -> None:
        epoch = job.epoch
        self.sim.after(delay_us, lambda: self._checkpoint(job, epoch, migrate_to))

    def _checkpoint(self, job: Job, epoch: int, migrate_to: int | None) -> None:
        if epoch != job.epoch or job.state != "running":
            return
        now = self.sim.now_us
        self._advance(job, now)
        step = int(job.progress)
        job.progress = float(step)
        job.state = "checkpointing"
        factor, fault = self.storage.get(job.vc, (1.0, None))
        duration = job.checkpoint_s() * factor * self.rng.uniform(0.95, 1.1)
        if fault is not None:
            fault.hold += 1  # its truth waits for this slowed checkpoint
            job.ckpt_fault = fault
        self.sim.emit(c.JobCheckpointStarted(job=job.id, step=step))
        self.sim.after(round(duration * _US),
                       lambda: self._checkpointed(job, epoch, step, duration, fault, migrate_to))

    def _checkpointed(self, job: Job, epoch: int, step: int, duration: float,
                      fault: Fault | None, migrate_to: int | None) -> None:
        if epoch != job.epoch or job.state != "checkpointing":
            return
        now = self.sim.now_us
        self.sim.emit(c.JobCheckpointCompleted(job=job.id, step=step,
                                               duration_s=round(duration, 3),
                                               size_gb=round(job.checkpoint_gb, 1)))
        job.last_ckpt_step, job.last_ckpt_us = step, now
        if fault is not None:
            fault.symptom(now)
            fault.touch(job.entity)
            job.ckpt_fault = None
            self.sim.injector.release_hold(fault)
        if migrate_to is not None:
            job.state = "migrating"
            delay = round(self.rng.uniform(60.0, 180.0) * _US)
            self.sim.after(delay, lambda: self._arrive(job, epoch, migrate_to))
            return
        job.state = "running"
        job.updated_us = now
        self._schedule_checkpoint(job, round(job.ckpt_interval_s * _US))

    # ---- failures, restarts, migration ----------------------------------------------------

    def fail(self, job: Job, exit_code: int, reason: str, fault: Fault | None) -> bool:
        """All ranks of ``job`` exit now; returns False when it was not running anyway."""
        if job.state in ("pending", "restarting", "done"):
            return False
        now = self.sim.now_us
        self._advance(job, now)
        lost_s = (now - max(job.last_ckpt_us, job.resumed_us)) / _US
        if job.state in ("starting", "migrating"):
            lost_s = 0.0
        self.sim.emit(c.JobFailed(job=job.id, step=int(job.progress), exit_code=exit_code,
                                  reason=reason, lost_s=round(lost_s, 3)))
        self.stats.failures += 1
        self.stats.lost_gpu_hours += lost_s * job.gpus / 3600
        if fault is not None:
            fault.touch(job.entity)
        for job_fault in job.faults:
            self.sim.injector.finish(job_fault, now)
        job.faults = []
        if job.ckpt_fault is not None:
            self.sim.injector.release_hold(job.ckpt_fault)
            job.ckpt_fault = None
        job.sdc_mode = ""
        job.loss_factor = 1.0
        job.epoch += 1
        job.state = "restarting"
        job.failed_us = now
        gone = [n for n in job.nodes if not self.healthy(n)]
        self._release(gone)
        job.nodes = [n for n in job.nodes if n not in gone]
        epoch = job.epoch
        self.sim.after(round(self.config.restart_overhead_s * _US),
                       lambda: self._restart(job, epoch))
        return True

    def fail_on(self, nodes: list[int] | range, exit_code: int, reason: str,
                fault: Fault | None) -> None:
        for job in self.jobs_on(nodes):
            self.fail(job, exit_code, reason, fault)

    def _restart(self, job: Job, epoch: int) -> None:
        if epoch != job.epoch or job.state != "restarting":
            return
        gone = [n for n in job.nodes if not self.healthy(n)]
        self._release(gone)
        keep = [n for n in job.nodes if n not in gone]
        need = job.size - len(keep)
        candidates = sorted(self.spares[job.vc]) + sorted(self.free[job.vc])
        if len(candidates) < need:
            job.nodes = keep
            self.sim.after(RETRY_US, lambda: self._restart(job, epoch))
            return
        self._assign(job, candidates[:need])
        job.nodes = sorted(keep + candidates[:need])
        now = self.sim.now_us
        overhead = (now - job.failed_us) / _US
        self.sim.emit(c.JobRestarted(job=job.id, from_step=job.last_ckpt_step,
                                     nodes=self._names(job.nodes), overhead_s=round(overhead, 3)))
        self.stats.restarts += 1
        self.stats.lost_gpu_hours += overhead * job.gpus / 3600
        self._resume(job, job.last_ckpt_step)

    def hang(self, job: Job, fault: Fault, timeout_s: float, exit_code: int, reason: str) -> None:
        """A collective hangs: no more steps; the job is killed ``timeout_s`` later (by the NCCL
        watchdog, or without its line: ``exit_code`` and ``reason`` say which)."""
        self._advance(job, self.sim.now_us)
        job.state = "hung"
        job.faults.append(fault)
        epoch = job.epoch

        def watchdog() -> None:
            if epoch == job.epoch and job.state == "hung":
                self.fail(job, exit_code, reason, fault)

        self.sim.after(round(timeout_s * _US), watchdog)

    def corrupt(self, job: Job, fault: Fault, mode: str, factor: tuple[float, float],
                reports: tuple[int, int], ramp: int) -> None:
        """Silent data corruption: the next step reports carry a bad loss (NaN, or the loss
        times a factor drawn between ``factor`` per report, reached over ``ramp`` reports); a
        check fails the job after ``reports`` (drawn between the two, bounds included) of them."""
        job.faults.append(fault)
        job.sdc_mode = mode
        job.sdc_since_us = self.sim.now_us
        job.sdc_reports = 0
        job.sdc_fail_after = int(self.rng.integers(reports[0], reports[1] + 1))
        job.sdc_factor = factor
        job.sdc_ramp = ramp

    def request_migration(self, job: Job, to_vc: int, tries: int = 10) -> None:
        """Pause, checkpoint, move to virtual cluster ``to_vc``, resume (now, or when running)."""
        if job.state != "running":
            if tries > 0 and job.state != "done":
                self.sim.after(RETRY_US, lambda: self.request_migration(job, to_vc, tries - 1))
            else:
                self.stats.migrations_refused += 1
            return
        self._checkpoint(job, job.epoch, to_vc)

    def _arrive(self, job: Job, epoch: int, to_vc: int) -> None:
        if epoch != job.epoch or job.state != "migrating":
            return
        candidates = sorted(self.free[to_vc]) + sorted(self.spares[to_vc])
        if len(candidates) < job.size:
            self.stats.migrations_refused += 1
            self._resume(job, job.last_ckpt_step)
            return
        old = job.nodes
        self._release(old)
        job.nodes = candidates[:job.size]
        self._assign(job, job.nodes)
        self.sim.emit(c.JobMigrated(job=job.id, from_vcluster=self.topo.vc_names[job.vc],
                                    to_vcluster=self.topo.vc_names[to_vc],
                                    nodes=self._names(job.nodes)))
        job.vc = to_vc
        self.stats.migrations += 1
        self._resume(job, job.last_ckpt_step)

    def _complete(self, job: Job) -> None:
        self.sim.emit(c.JobCompleted(job=job.id, step=int(job.progress)))
        job.state = "done"
        job.epoch += 1
        self._release(job.nodes)
        self.stats.completed += 1
        vc = job.vc
        delay = round(self.rng.uniform(60.0, 600.0) * _US)
        self.sim.after(delay, lambda: self._replace(vc))

    def _replace(self, vc: int) -> None:
        size = draw_small_size(max(1, len(self.free[vc])), self.rng)
        self.submit(self._new_job(vc, size, steady=False))

    # ---- one scrape -----------------------------------------------------------------------

    def tick(self, t_us: int, prev_us: int) -> None:
        """Advance jobs to ``t_us``, report steps, finish jobs, update phases and stragglers."""
        phase = self.tel.slot_phase
        finished = False
        for job in self.active:
            if job.state == "running":
                self._advance(job, t_us)
                self._report(job, t_us, prev_us)
                if job.total_steps is not None and job.progress >= job.total_steps:
                    self._complete(job)
            job.slowdown = 1.0
            state = job.state
            if state == "running":
                share = job.progress - math.floor(job.progress)
                phase[job.slot + 1] = PHASE_COMPUTE if share < job.compute_share else PHASE_COMM
            elif state == "checkpointing":
                phase[job.slot + 1] = PHASE_CKPT
            elif state == "hung":
                phase[job.slot + 1] = PHASE_HANG
            else:
                phase[job.slot + 1] = PHASE_IDLE
            finished = finished or state == "done"
        if finished:
            self.active = [j for j in self.active if j.state != "done"]
        for node, factor, owner in self.tel.slow_nodes(t_us):
            slot = int(self.node_job[node])
            if slot < 0:
                continue
            job = self.jobs[slot]
            if job.state in ("running", "checkpointing", "hung"):
                job.slowdown = max(job.slowdown, 1.0 / factor)
                # the overlay's owner is the fault slowing it: the job is affected too
                if isinstance(owner, Fault) and job.state == "running":
                    owner.touch(job.entity)

    def _report(self, job: Job, t_us: int, prev_us: int) -> None:
        step = int(job.progress)
        if step <= job.reported_step:
            return
        step_s = job.base_step_s * job.slowdown
        at = t_us - round((job.progress - step) * step_s * _US)
        at = min(t_us, max(at, prev_us + 1, job.resumed_us))
        noisy = step_s * (1.0 + 0.01 * float(self.rng.standard_normal()))
        loss = loss_curve(step) + 0.01 * float(self.rng.standard_normal())
        if job.loss_factor != 1.0:  # a software fault's loss spike before its exception
            loss *= job.loss_factor
            for fault in job.faults:
                fault.symptom(at)
        if job.sdc_mode:
            at = min(t_us, max(at, job.sdc_since_us + 1))
            if job.sdc_mode == "nan":
                loss = math.nan
            else:
                bad = float(self.rng.uniform(*job.sdc_factor))
                if job.sdc_ramp > 1:  # a drift: the factor reached over sdc_ramp reports
                    bad = 1.0 + (bad - 1.0) * min(1.0, (job.sdc_reports + 1) / job.sdc_ramp)
                loss = loss * bad
            job.sdc_reports += 1
            for fault in job.faults:
                fault.symptom(at)
            if job.sdc_reports == job.sdc_fail_after:
                culprit = job.faults[-1] if job.faults else None
                reason = "loss is NaN" if job.sdc_mode == "nan" else "sdc check mismatch"
                epoch = job.epoch

                def fail_sdc() -> None:
                    if epoch == job.epoch:
                        self.fail(job, 1, reason, culprit)

                self.sim.after(round(self.rng.uniform(0.5, 3.0) * _US), fail_sdc)
        self.sim.emit(c.JobStepReported(
            job=job.id, step=step, step_time_s=round(noisy, 4),
            tokens_per_s=round(job.tokens_per_step / noisy, 1), loss=round(loss, 5)
            if not math.isnan(loss) else loss,
        ), at)
        job.reported_step, job.reported_us = step, at
