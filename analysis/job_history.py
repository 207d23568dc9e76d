"""What the store says about each job: size, lifetime, placements, checkpoints and failures.

Shared by the what-if replay (``analysis.whatif_data``) and the job-level recommendations
(``analysis.job_actions``). Reads the ``job_events`` view only.
"""

from __future__ import annotations

import bisect
import json
import statistics
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Final

import duckdb

US: Final = 1_000_000
DEFAULT_RESTART_S: Final = 600.0  # when a job never restarted
DEFAULT_CHECKPOINT_S: Final = 60.0  # when no job in the store completed a checkpoint
_PLACING: Final = ("job.placed", "job.restarted", "job.migrated")


@dataclass
class JobHistory:
    job: str
    gpus: int = 0
    first_us: int = 0
    last_us: int = 0
    interval_s: float = 3600.0  # the checkpoint interval the job was submitted with
    checkpoint_s: float = 0.0  # median job.checkpoint_completed.duration_s (δ)
    restart_s: float = DEFAULT_RESTART_S  # median job.restarted.overhead_s
    placements: list[tuple[int, tuple[str, ...]]] = field(default_factory=list)
    failures: list[tuple[int, str]] = field(default_factory=list)  # (time, event id)
    checkpoints: list[int] = field(default_factory=list)  # completion times
    ended_us: int | None = None  # job.completed / job.cancelled
    # Where it ran: job.submitted/placed name a virtual cluster, job.migrated moves it.
    vclusters: list[tuple[int, str]] = field(default_factory=list)
    # failure event id -> overhead_s of the job.restarted that followed it (includes any wait
    # for healthy nodes: the scheduler restarts only when it has them)
    restart_after: dict[str, float] = field(default_factory=dict)

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


def load_jobs(con: duckdb.DuckDBPyConnection) -> dict[str, JobHistory]:
    """Every job in the store, with what the replay and the recommendations need."""
    jobs: dict[str, JobHistory] = {}
    for job, first, last in con.execute(
        "SELECT job, epoch_us(min(ts)), epoch_us(max(ts)) FROM job_events GROUP BY job"
    ).fetchall():
        jobs[job] = JobHistory(job, first_us=int(first), last_us=int(last))
    overheads: dict[str, list[float]] = {}
    durations: dict[str, list[float]] = {}
    rows = con.execute(
        "SELECT job, type, epoch_us(ts), event_id, payload FROM job_events WHERE type IN "
        "('job.submitted', 'job.placed', 'job.restarted', 'job.migrated', 'job.failed', "
        "'job.checkpoint_completed', 'job.completed', 'job.cancelled') "
        "ORDER BY job, ts, event_id"
    ).fetchall()
    pending: dict[str, str] = {}  # job -> its last failure not yet followed by a restart
    for job, kind, ts_us, event_id, payload in rows:
        h = jobs[job]
        body = json.loads(payload) if isinstance(payload, str) else dict(payload or {})
        where = body.get("to_vcluster") or body.get("vcluster")
        if kind in ("job.submitted", "job.placed", "job.migrated") and where:
            h.vclusters.append((int(ts_us), str(where)))
        if kind == "job.submitted":
            h.gpus = int(body.get("gpus", 0))
            h.interval_s = float(body.get("checkpoint_interval_s", 3600.0))
        elif kind == "job.failed":
            h.failures.append((int(ts_us), str(event_id)))
            pending[job] = str(event_id)
        elif kind == "job.checkpoint_completed":
            h.checkpoints.append(int(ts_us))
            durations.setdefault(job, []).append(float(body.get("duration_s", 0.0)))
        elif kind in ("job.completed", "job.cancelled"):
            h.ended_us = int(ts_us)
        if kind in _PLACING and body.get("nodes"):
            h.placements.append((int(ts_us), tuple(body["nodes"])))
        if kind == "job.restarted" and body.get("overhead_s"):
            overheads.setdefault(job, []).append(float(body["overhead_s"]))
            if job in pending:
                h.restart_after[pending.pop(job)] = float(body["overhead_s"])
    every = [d for ds in durations.values() for d in ds if d > 0]
    fleet_delta = statistics.median(every) if every else DEFAULT_CHECKPOINT_S
    for job, h in jobs.items():
        mine = [d for d in durations.get(job, []) if d > 0]
        h.checkpoint_s = statistics.median(mine) if mine else fleet_delta
        if overheads.get(job):
            h.restart_s = statistics.median(overheads[job])
        if h.gpus <= 0 and h.placements:
            h.gpus = 8 * len(h.placements[0][1])
    return jobs


def fleet_restart_s(jobs: dict[str, JobHistory], exclude: Collection[str] = ()) -> float:
    """The fleet's normal restart overhead: the median recorded ``overhead_s`` of the restarts
    after the failures not in ``exclude`` (pass those that found their pool short of nodes: their
    overhead includes the wait)."""
    every = [o for h in jobs.values() for e, o in h.restart_after.items() if e not in exclude]
    if not every:
        every = [o for h in jobs.values() for o in h.restart_after.values()]
    return statistics.median(every) if every else DEFAULT_RESTART_S
