"""Job-level recommendations for the stored incidents (target ``job:<id>``).

For each incident that affects jobs:
- ``restart_from_checkpoint`` for every job whose ``job.failed`` is in the incident's evidence:
  restart from the last checkpoint on spare nodes, leaving out the suspect node(s) (the nodes the
  incident's root sits on that the job held). Estimated saving, only for hangs and slowdowns
  (``job_history.IMPLICIT_CATEGORIES``: nccl_hang, gpu_thermal, sdc, cooling, storage — a crash
  is seen at exit by any scheduler):
  ``gpus × max(0, watchdog − detection delay) / 3600`` GPU-hours, the detection delay being the
  incident's detection time minus its first symptom.
- ``migrate_job`` instead of the restart when the job's virtual cluster lacks healthy capacity
  (fewer healthy idle nodes than the restart needs) and another virtual cluster has room for the
  whole job (``analysis.capacity``: how capacity is read from events, and the estimate of the
  wait). Estimated saving: ``gpus × max(0, expected wait for the local pool − MIGRATE_S) / 3600``
  (``whatif.MIGRATE_S``),
  plus the restart's own saving above.
- ``checkpoint_now`` for every job running on the incident's nodes when a precursor incident
  (gpu_hbm, gpu_sram, gpu_thermal, network — rising ECC or link symbol errors) is detected, if the
  job has not failed since the incident began. Estimated saving, assuming the precursor ends in a
  failure (so an upper bound): ``gpus × max(0, time since the job's last checkpoint − δ) / 3600``,
  the work at risk at detection minus the cost δ of the extra checkpoint.
- ``swap_node`` right after that checkpoint: restart from it leaving the suspect node out, when the
  precursor sits on one node and the job's pool has a healthy idle node (``analysis.precursors``:
  swap the node before the failure reaches the job). Estimated saving, again assuming the
  precursor ends in a failure: ``gpus × max(0, median measured warning lead − δ) / 3600`` — the
  work the job would do between the checkpoint and the failure — with the lead measured in the
  store (from a failure's earliest warning to when the failure began — a hang at its last step —
  over the failures that were warned; 0 when none was).
- ``set_checkpoint_interval`` once per affected job: Daly's interval (``analysis.checkpoint``) for
  its δ and its MTBF (the fleet's measured node MTBF ÷ the job's nodes; failures a precursor
  warned early enough for a checkpoint-now are not counted: they cost that checkpoint, not
  periodic rework — ``checkpoint.lead_covers_checkpoint``, the rule the what-if replay applies),
  when it differs from the job's submitted interval by more than 10%. Estimated saving:
  ``gpus × wall hours × (loss(current interval) − loss(Daly))`` with ``expected_loss_fraction``.

No truth is read: only the projections (jobs, node health, topology) and the stored incidents.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Final

import duckdb

from fleetlog.analysis.capacity import Capacity, MigrationCheck, build_capacity
from fleetlog.analysis.checkpoint import (
    daly_interval,
    expected_loss_fraction,
    job_mtbf_s,
    lead_covers_checkpoint,
    node_count,
    node_mtbf_s,
)
from fleetlog.analysis.events import HISTORY_TYPES, fold_store
from fleetlog.analysis.job_history import (
    IMPLICIT_CATEGORIES,
    US,
    JobHistory,
    failure_start_us,
    job_histories,
)
from fleetlog.analysis.precursors import PRECURSOR_CATEGORIES, can_swap, earliest_warning
from fleetlog.analysis.stored_incidents import (
    StoredIncident,
    explaining_incidents,
    load_incidents,
)
from fleetlog.analysis.whatif import MIGRATE_S
from fleetlog.ingest import contract as c

INTERVAL_TOLERANCE: Final = 0.10


@dataclass(frozen=True)
class JobAction:
    ts_us: int  # event time of the recommendation
    incident_id: str
    target: str
    action: str
    reason: str
    gpu_hours_saved: float
    after: str | None = None  # the action on the same job and incident to carry out first


def _restart(s: StoredIncident, h: JobHistory, fail_us: int, check: MigrationCheck,
             watchdog_s: float) -> JobAction:
    inc = s.incident
    if inc.category == "software":
        # The job's own error (every rank exits together, no hardware signal): restarting as is
        # fails the same way, so the advice is the same as ``explain``'s (analysis.evidence).
        return JobAction(
            max(fail_us, inc.detect_us), s.incident_id, c.job_entity(h.job), "fix_and_restart",
            f"job {h.job} failed on its own error (software, no hardware signal): fix the code "
            "or dependency, then restart from its last checkpoint; restarting as is will fail "
            "the same way", 0.0)
    suspects = sorted(s.nodes & set(h.nodes_at(fail_us - 1)))
    pool = f"{check.local_idle} healthy idle node(s) in {check.vcluster or 'its cluster'}"
    if suspects:
        where = f"on spare nodes ({pool}), leaving out suspect node(s) {', '.join(suspects)}"
    else:
        where = "on its nodes: no node is suspect"
    saved = 0.0
    if inc.category in IMPLICIT_CATEGORIES:
        delay_s = max(0.0, (inc.detect_us - inc.start_us) / US)
        saved = h.gpus * max(0.0, watchdog_s - delay_s) / 3600
    what = f"job {h.job} failed ({inc.category} on {inc.root})"
    ts_us = max(fail_us, inc.detect_us)
    if check.migrate:
        saved += h.gpus * max(0.0, check.wait_s - MIGRATE_S) / 3600
        return JobAction(
            ts_us, s.incident_id, c.job_entity(h.job), "migrate_job",
            f"{what}: migrate it to {check.target} ({check.target_idle} healthy idle nodes for "
            f"its {len(h.nodes_at(fail_us - 1))}) and resume from its last checkpoint; "
            f"{check.vcluster} has {check.local_idle} healthy idle node(s) for the "
            f"{check.need} it needs, expected wait {check.wait_s / 3600:.1f} h vs "
            f"{MIGRATE_S / 60:.0f} min to move", round(saved, 3))
    if check.short:
        where += (f"; it needs {check.need}: expect to wait {check.wait_s / 3600:.1f} h for "
                  "repairs (no other virtual cluster has room for it)")
    return JobAction(ts_us, s.incident_id, c.job_entity(h.job), "restart_from_checkpoint",
                     f"{what}: restart from its last checkpoint {where}", round(saved, 3))


def _checkpoint_now(s: StoredIncident, h: JobHistory) -> JobAction:
    inc = s.incident
    at_risk_s = (inc.detect_us - h.last_checkpoint_before(inc.detect_us)) / US
    saved = h.gpus * max(0.0, at_risk_s - h.checkpoint_s) / 3600
    return JobAction(
        inc.detect_us, s.incident_id, c.job_entity(h.job), "checkpoint_now",
        f"precursor {inc.category} on {inc.root} (a node job {h.job} runs on): checkpoint now, "
        f"{at_risk_s / 60:.0f} min of work since its last checkpoint is at risk", round(saved, 3))


def _swap(s: StoredIncident, h: JobHistory, lead_s: float) -> JobAction:
    inc = s.incident
    saved = h.gpus * max(0.0, lead_s - h.checkpoint_s) / 3600
    node = ", ".join(sorted(s.nodes))
    return JobAction(
        inc.detect_us + round(h.checkpoint_s * US), s.incident_id, c.job_entity(h.job),
        "swap_node",
        f"precursor {inc.category} on {inc.root}: once the checkpoint-now completes, restart "
        f"job {h.job} from it on a spare node, leaving out suspect node(s) {node}, before the "
        f"failure reaches it (warnings led failures by {_duration(lead_s)}, median)",
        round(saved, 3), after="checkpoint_now")


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def _failure_leads(jobs: dict[str, JobHistory], incidents: list[StoredIncident],
                   precursors: list[StoredIncident]) -> list[tuple[JobHistory, float]]:
    """Per job failure: the job, and the lead of the earliest precursor that warned it (0: none)
    up to when the failure began — as the replay measures it (``whatif_data.failure_record``),
    with the category from the incident that explains the failure (no truth here)."""
    explaining = explaining_incidents(incidents)
    out = []
    for h in jobs.values():
        for fail_us, event_id in h.failures:
            s = explaining.get(event_id)
            at_us = failure_start_us(h, fail_us, s.incident.category if s else "",
                                     h.last_step_before.get(event_id))
            lead, _first = earliest_warning(h, at_us, set(h.nodes_at(fail_us - 1)), precursors)
            out.append((h, lead))
    return out


def _median_lead_s(leads: list[tuple[JobHistory, float]]) -> float:
    """Median time from a failure's first warning to the failure (0: no failure was warned)."""
    warned = [lead for _h, lead in leads if lead > 0]
    return statistics.median(warned) if warned else 0.0


def _interval(s: StoredIncident, h: JobHistory, node_mtbf: float, ts_us: int) -> JobAction | None:
    # Daly's interval needs the job's size and a checkpoint cost: without a GPU count in the
    # data there is no job MTBF to quote, so no advice; an unmeasured δ is labelled assumed.
    if node_mtbf == float("inf") or h.checkpoint_s <= 0 or h.gpus <= 0:
        return None
    mtbf = job_mtbf_s(node_mtbf, node_count(h.gpus))
    best = daly_interval(h.checkpoint_s, mtbf)
    if abs(best - h.interval_s) <= INTERVAL_TOLERANCE * h.interval_s:
        return None
    now = expected_loss_fraction(h.interval_s, h.checkpoint_s, h.restart_s, mtbf)
    then = expected_loss_fraction(best, h.checkpoint_s, h.restart_s, mtbf)
    saved = h.gpus * h.wall_s / 3600 * max(0.0, now - then)
    return JobAction(
        ts_us, s.incident_id, c.job_entity(h.job), "set_checkpoint_interval",
        f"Daly's interval for {h.gpus} GPUs: checkpoint every {best / 60:.0f} min instead of "
        f"{h.interval_s / 60:.0f} min (checkpoint {h.checkpoint_s:.0f} s "
        f"{_CHECKPOINT_FROM[h.checkpoint_from]}, job MTBF "
        f"{mtbf / 3600:.1f} h from the measured node MTBF {node_mtbf / 3600:.0f} h, failures "
        "that a precursor warned in time not counted)",
        round(saved, 3))


_CHECKPOINT_FROM: Final = {"measured": "measured", "fleet": "the fleet's median",
                           "assumed": "assumed: no checkpoint in the data"}


def _check(capacity: Capacity, s: StoredIncident, h: JobHistory, fail_us: int) -> MigrationCheck:
    """The pools when the failure is known; a recommended move reserves its target nodes."""
    ts_us = max(fail_us, s.incident.detect_us)
    check = capacity.check(h, ts_us, sorted(s.nodes & set(h.nodes_at(fail_us - 1))))
    if check.migrate and check.target is not None:
        capacity.reserve(check.target, len(h.nodes_at(fail_us - 1)))
    return check


def _unwarned_node_mtbf_s(jobs: dict[str, JobHistory],
                          leads: list[tuple[JobHistory, float]]) -> float:
    """The node MTBF counting only the failures no precursor warned in time for a checkpoint
    to complete first: the failures periodic checkpoints are for (``analysis.whatif``)."""
    unwarned = sum(not lead_covers_checkpoint(lead, h.checkpoint_s) for h, lead in leads)
    return node_mtbf_s(((h.wall_s, h.gpus) for h in jobs.values()), unwarned)


def job_actions(con: duckdb.DuckDBPyConnection, *, watchdog_s: float = 1800.0) -> list[JobAction]:
    """Job-level actions for every stored incident that affects jobs, in time order."""
    state = fold_store(con, HISTORY_TYPES)
    jobs = job_histories(state.jobs)
    incidents = load_incidents(con, state.topology)
    capacity = build_capacity(state.topology, state.health, jobs, incidents)
    precursors = [s for s in incidents if s.incident.category in PRECURSOR_CATEGORIES]
    leads = _failure_leads(jobs, incidents, precursors)
    lead_s = _median_lead_s(leads)
    failed = {event_id: (h, t) for h in jobs.values() for t, event_id in h.failures}
    node_mtbf = _unwarned_node_mtbf_s(jobs, leads)
    tuned: set[str] = set()
    actions: list[JobAction] = []
    for s in incidents:
        inc = s.incident
        touched: list[tuple[JobHistory, int]] = []
        for event_id in sorted(s.evidence):
            if event_id in failed:
                h, fail_us = failed[event_id]
                actions.append(_restart(s, h, fail_us, _check(capacity, s, h, fail_us),
                                        watchdog_s))
                touched.append((h, max(fail_us, inc.detect_us)))
        if inc.category in PRECURSOR_CATEGORIES and s.nodes:
            for h in jobs.values():
                if (h.running_at(inc.detect_us) and s.nodes & set(h.nodes_at(inc.detect_us))
                        and not h.failed_between(inc.start_us, inc.detect_us)):
                    actions.append(_checkpoint_now(s, h))
                    if can_swap(capacity, h, s):
                        actions.append(_swap(s, h, lead_s))
                    touched.append((h, inc.detect_us))
        for h, ts_us in touched:
            if h.job in tuned:
                continue
            tuned.add(h.job)
            action = _interval(s, h, node_mtbf, ts_us)
            if action is not None:
                actions.append(action)
    return sorted(actions, key=lambda a: (a.ts_us, a.target, a.action))
