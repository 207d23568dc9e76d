"""Job-level recommendations for the stored incidents (target ``job:<id>``).

For each incident that affects jobs:
- ``restart_from_checkpoint`` for every job whose ``job.failed`` is in the incident's evidence:
  restart from the last checkpoint on spare nodes, leaving out the suspect node(s) (the nodes the
  incident's root sits on that the job held). Estimated saving, only for hangs and slowdowns
  (nccl_hang, gpu_thermal, sdc, cooling, storage — a crash is seen at exit by any scheduler):
  ``gpus × max(0, watchdog − detection delay) / 3600`` GPU-hours, the detection delay being the
  incident's detection time minus its first symptom.
- ``checkpoint_now`` for every job running on the incident's nodes when a precursor incident
  (gpu_hbm, gpu_sram, gpu_thermal, network — rising ECC or link symbol errors) is detected, if the
  job has not failed since the incident began. Estimated saving, assuming the precursor ends in a
  failure (so an upper bound): ``gpus × max(0, time since the job's last checkpoint − δ) / 3600``,
  the work at risk at detection minus the cost δ of the extra checkpoint.
- ``set_checkpoint_interval`` once per affected job: Daly's interval (``analysis.checkpoint``) for
  its δ and its MTBF (the fleet's measured node MTBF ÷ the job's nodes), when it differs from the
  job's submitted interval by more than 10%. Estimated saving:
  ``gpus × wall hours × (loss(current interval) − loss(Daly))`` with ``expected_loss_fraction``.

No truth is read: only jobs, topology and the stored incidents.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import duckdb

from analysis.checkpoint import daly_interval, expected_loss_fraction
from analysis.job_history import US, JobHistory, load_jobs, node_mtbf_s
from analysis.whatif_data import (
    IMPLICIT_CATEGORIES,
    PRECURSOR_CATEGORIES,
    StoredIncident,
    load_incidents,
    load_topology,
)
from ingest import contract as c

INTERVAL_TOLERANCE: Final = 0.10


@dataclass(frozen=True)
class JobAction:
    ts_us: int  # event time of the recommendation
    incident_id: str
    target: str
    action: str
    reason: str
    gpu_hours_saved: float


def _restart(s: StoredIncident, h: JobHistory, fail_us: int, spares: int,
             watchdog_s: float) -> JobAction:
    inc = s.incident
    suspects = sorted(s.nodes & set(h.nodes_at(fail_us - 1)))
    if suspects:
        where = (f"on spare nodes ({spares} in the fleet), leaving out suspect node(s) "
                 f"{', '.join(suspects)}")
    else:
        where = "on its nodes: no node is suspect"
    saved = 0.0
    if inc.category in IMPLICIT_CATEGORIES:
        delay_s = max(0.0, (inc.detect_us - inc.start_us) / US)
        saved = h.gpus * max(0.0, watchdog_s - delay_s) / 3600
    return JobAction(
        max(fail_us, inc.detect_us), s.incident_id, c.job_entity(h.job),
        "restart_from_checkpoint",
        f"job {h.job} failed ({inc.category} on {inc.root}): restart from its last checkpoint "
        f"{where}", round(saved, 3))


def _checkpoint_now(s: StoredIncident, h: JobHistory) -> JobAction:
    inc = s.incident
    at_risk_s = (inc.detect_us - h.last_checkpoint_before(inc.detect_us)) / US
    saved = h.gpus * max(0.0, at_risk_s - h.checkpoint_s) / 3600
    return JobAction(
        inc.detect_us, s.incident_id, c.job_entity(h.job), "checkpoint_now",
        f"precursor {inc.category} on {inc.root} (a node job {h.job} runs on): checkpoint now, "
        f"{at_risk_s / 60:.0f} min of work since its last checkpoint is at risk", round(saved, 3))


def _interval(s: StoredIncident, h: JobHistory, node_mtbf: float, ts_us: int) -> JobAction | None:
    if node_mtbf == float("inf") or h.checkpoint_s <= 0:
        return None
    nodes = max(1, h.gpus // 8)
    mtbf = node_mtbf / nodes
    best = daly_interval(h.checkpoint_s, mtbf)
    if abs(best - h.interval_s) <= INTERVAL_TOLERANCE * h.interval_s:
        return None
    now = expected_loss_fraction(h.interval_s, h.checkpoint_s, h.restart_s, mtbf)
    then = expected_loss_fraction(best, h.checkpoint_s, h.restart_s, mtbf)
    saved = h.gpus * h.wall_s / 3600 * max(0.0, now - then)
    return JobAction(
        ts_us, s.incident_id, c.job_entity(h.job), "set_checkpoint_interval",
        f"Daly's interval for {h.gpus} GPUs: checkpoint every {best / 60:.0f} min instead of "
        f"{h.interval_s / 60:.0f} min (checkpoint {h.checkpoint_s:.0f} s, job MTBF "
        f"{mtbf / 3600:.1f} h from the measured node MTBF {node_mtbf / 3600:.0f} h)",
        round(saved, 3))


def job_actions(con: duckdb.DuckDBPyConnection, *, watchdog_s: float = 1800.0) -> list[JobAction]:
    """Job-level actions for every stored incident that affects jobs, in time order."""
    jobs = load_jobs(con)
    topo = load_topology(con)
    incidents = load_incidents(con, topo)
    spares = sum(1 for info in topo.nodes.values() if info.spare)
    failed = {event_id: (h, t) for h in jobs.values() for t, event_id in h.failures}
    node_mtbf = node_mtbf_s(jobs)
    tuned: set[str] = set()
    actions: list[JobAction] = []
    for s in incidents:
        inc = s.incident
        touched: list[tuple[JobHistory, int]] = []
        for event_id in sorted(s.evidence):
            if event_id in failed:
                h, fail_us = failed[event_id]
                actions.append(_restart(s, h, fail_us, spares, watchdog_s))
                touched.append((h, max(fail_us, inc.detect_us)))
        if inc.category in PRECURSOR_CATEGORIES and s.nodes:
            for h in jobs.values():
                if (h.running_at(inc.detect_us) and s.nodes & set(h.nodes_at(inc.detect_us))
                        and not h.failed_between(inc.start_us, inc.detect_us)):
                    actions.append(_checkpoint_now(s, h))
                    touched.append((h, inc.detect_us))
        for h, ts_us in touched:
            if h.job in tuned:
                continue
            tuned.add(h.job)
            action = _interval(s, h, node_mtbf, ts_us)
            if action is not None:
                actions.append(action)
    return sorted(actions, key=lambda a: (a.ts_us, a.target, a.action))
