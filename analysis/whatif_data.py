"""What-if inputs from a store: the recorded jobs and failures as ``whatif`` records; the report.

Needs a store that ``fleetlog analyze`` has run on (the stored ``incidents``) and, being an
evaluation, pairs them with the ground truth for when each fault began: through
``analysis.evaluate`` (``truth_by_incident``), which alone reads ``truth_faults``. Jobs, node
health and topology come from the projections (``events.fold_store``), as for capacity and the
job actions.

The model and its assumptions:
- A job (``JobRecord``) spans its first to its last job event (step reports included); its size
  is ``job.submitted.gpus``; δ (checkpoint cost) is the median
  ``job.checkpoint_completed.duration_s`` of the job (the fleet's median when it never
  checkpointed, 60 s when nobody did); the restart overhead is the median
  ``job.restarted.overhead_s`` (600 s when it never restarted) (``analysis.job_history``).
- Every ``job.failed`` is one failure. Its cause is the incident whose ``evidence`` lists the
  failure's event id, and the truth fault ``analysis.evaluate.match`` pairs with that incident.
  The failure is *implicit* (a hang or slowdown: nothing exits, a timeout must notice it) when
  the cause's category is nccl_hang, gpu_thermal, sdc, cooling or storage — the truth fault's
  category when one is matched, else the incident's; a failure no incident explains is treated
  as a crash (it exits; any scheduler sees it).
- When it happened (``at_s``, since the job's first event): the ``job.failed`` time for a crash;
  for an implicit failure, the job's last step before it (progress stopped there).
- ``detected_after_s``: the explaining incident's detection time (when its rule could first
  fire) minus the matched truth fault's start; without a matched fault, minus ``at_s``; None
  (never detected: the policy falls back to the watchdog) without an incident.
- ``warned_before_s``: the longest lead, before ``at_s``, of the *detection* of a precursor
  incident (gpu_hbm, gpu_sram, gpu_thermal, network) on a node the job held, that was still
  open (its last symptom no more than 10 minutes before the failure). Detection, not the first
  symptom: nothing can act on a warning before it is raised. ``swap``: that precursor sat on one
  node and the job's pool had a healthy idle node then (``analysis.precursors``).
- ``alarms`` (per job): precursors on the job's nodes that no failure of the job followed
  (false alarms); fleetlog's policy pays for acting on them.
- ``wait_s``: the recorded ``job.restarted.overhead_s`` after the failure minus the job's normal
  restart overhead (its median, capped by the fleet's median over the restarts whose pool was not
  short of nodes); the scheduler restarts only when it has healthy nodes, so the rest is the wait
  for them.
- ``migrate`` / ``movable``: ``analysis.capacity`` at the failure (when the explaining incident
  was detected, if later): the job's virtual cluster had fewer healthy idle nodes than the
  restart needed and another had room for the whole job / another had room. Checked in time
  order; a migration reserves its target's nodes.
- The policies themselves (intervals, watchdog, migration cost, oracle) are
  ``analysis.whatif``'s. Failures are independent of the checkpoint schedule, and a migrated job
  is not followed to its new cluster (its later failures are the recorded ones).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import duckdb

from fleetlog.analysis.capacity import Capacity, MigrationCheck, build_capacity
from fleetlog.analysis.evaluate import TruthFault, truth_by_incident
from fleetlog.analysis.events import HISTORY_TYPES, fold_store
from fleetlog.analysis.job_history import (
    IMPLICIT_CATEGORIES,
    US,
    JobHistory,
    failure_start_us,
    fleet_restart_s,
    job_histories,
)
from fleetlog.analysis.precursors import (
    PRECURSOR_CATEGORIES,
    can_swap,
    earliest_warning,
    false_alarms,
)
from fleetlog.analysis.projections import Topology
from fleetlog.analysis.stored_incidents import (
    StoredIncident,
    explaining_incidents,
    load_incidents,
)
from fleetlog.analysis.whatif import (
    NO_FAILURE_MTBF_S,
    POLICIES,
    FailureRecord,
    JobRecord,
    checkpoint_speedup_for,
    evaluate,
    expected_periodic_loss,
    measured_mtbf_s,
)


def failure_record(
    h: JobHistory, fail_us: int, event_id: str, *, explained: StoredIncident | None,
    fault: TruthFault | None, last_step_us: int | None, precursors: Sequence[StoredIncident],
    capacity: Capacity | None = None,
) -> tuple[FailureRecord, str]:
    """One failure as the replay sees it, and the category it was attributed to."""
    category = fault.category if fault else explained.incident.category if explained else ""
    implicit = category in IMPLICIT_CATEGORIES
    at_us = failure_start_us(h, fail_us, category, last_step_us)
    detected: float | None = None
    if explained is not None:
        began = fault.start_us if fault is not None else at_us
        detected = max(0.0, (explained.incident.detect_us - began) / US)
    warned, first = earliest_warning(h, at_us, set(h.nodes_at(fail_us - 1)), precursors)
    swap = first is not None and capacity is not None and can_swap(capacity, h, first)
    record = FailureRecord(at_s=(at_us - h.first_us) / US, implicit=implicit,
                           detected_after_s=detected, warned_before_s=warned, swap=swap)
    return record, category or "unexplained"


def migration_checks(capacity: Capacity, jobs: dict[str, JobHistory],
                     by_evidence: dict[str, StoredIncident]) -> dict[str, MigrationCheck]:
    """failure event id -> the capacity check when it was known, in time order (a move
    reserves its target's nodes for the checks after it)."""
    known = []
    for h in jobs.values():
        for fail_us, event_id in h.failures:
            s = by_evidence.get(event_id)
            at = max(fail_us, s.incident.detect_us) if s else fail_us
            known.append((at, event_id, h, fail_us, s))
    out: dict[str, MigrationCheck] = {}
    for at, event_id, h, fail_us, s in sorted(known, key=lambda k: (k[0], k[1])):
        held = h.nodes_at(fail_us - 1)
        check = capacity.check(h, at, sorted(s.nodes & set(held)) if s else ())
        if check.migrate and check.target is not None:
            capacity.reserve(check.target, len(held))
        out[event_id] = check
    return out


def _truth_of(con: duckdb.DuckDBPyConnection, incidents: Sequence[StoredIncident],
              jobs: dict[str, JobHistory], topo: Topology) -> dict[str, TruthFault]:
    """incident id -> the truth fault evaluation pairs it with, over the span of the jobs."""
    since, until = (min(h.first_us for h in jobs.values()),
                    max(h.last_us for h in jobs.values()) + 1) if jobs else (0, 2**62)
    return truth_by_incident(con, {s.incident_id: s.incident for s in incidents},
                             topo, since, until)


def load_records(con: duckdb.DuckDBPyConnection) -> tuple[list[JobRecord], dict[str, Any]]:
    """The replay's inputs from one store, plus counts describing them."""
    state = fold_store(con, HISTORY_TYPES)
    jobs = job_histories(state.jobs)
    incidents = load_incidents(con, state.topology)
    faults = _truth_of(con, incidents, jobs, state.topology)
    by_evidence = explaining_incidents(incidents)
    capacity = build_capacity(state.topology, state.health, jobs, incidents)
    checks = migration_checks(capacity, jobs, by_evidence)
    normal_restart = fleet_restart_s(jobs, {e for e, check in checks.items() if check.short})
    precursors = [s for s in incidents if s.incident.category in PRECURSOR_CATEGORIES]
    records: list[JobRecord] = []
    categories: dict[str, int] = {}
    stats = {"failures": 0, "implicit": 0, "detected": 0, "warned": 0, "matched_to_truth": 0,
             "waited_for_nodes": 0, "short_of_nodes": 0, "migrations": 0, "swapped": 0,
             "false_alarms": 0}
    waited_s = 0.0
    for job, h in sorted(jobs.items()):
        if h.wall_s <= 0 or h.gpus <= 0:
            continue
        restart_s = min(h.restart_s, normal_restart)
        failures = []
        for fail_us, event_id in h.failures:
            explained = by_evidence.get(event_id)
            fault = faults.get(explained.incident_id) if explained else None
            record, category = failure_record(
                h, fail_us, event_id, explained=explained, fault=fault,
                last_step_us=h.last_step_before.get(event_id), precursors=precursors,
                capacity=capacity)
            check = checks[event_id]
            wait = max(0.0, h.restart_after.get(event_id, restart_s) - restart_s)
            record = replace(record, wait_s=wait, migrate=check.migrate,
                             movable=check.target is not None)
            failures.append(record)
            stats["waited_for_nodes"] += wait > 0
            stats["short_of_nodes"] += check.short
            stats["migrations"] += check.migrate
            waited_s += wait * h.gpus
            categories[category] = categories.get(category, 0) + 1
            stats["failures"] += 1
            stats["implicit"] += record.implicit
            stats["detected"] += record.detected_after_s is not None
            stats["warned"] += record.warned_before_s > 0
            stats["swapped"] += record.swap and record.warned_before_s > h.checkpoint_s
            stats["matched_to_truth"] += fault is not None
        alarms = false_alarms(h, precursors, capacity)
        stats["false_alarms"] += len(alarms)
        records.append(JobRecord(job=job, gpus=h.gpus, wall_s=h.wall_s,
                                 checkpoint_s=h.checkpoint_s, restart_s=restart_s,
                                 failures=tuple(failures), alarms=alarms))
    return records, {"jobs": len(records), **stats,
                     "waited_gpu_hours": round(waited_s / 3600, 1),
                     "failure_categories": dict(sorted(categories.items())),
                     "incidents": len(incidents)}


def whatif(paths: Sequence[str | Path], policies: Sequence[str] = POLICIES, *,
           watchdog_s: float = 1800.0, gap_points: float = 2.0) -> dict[str, Any]:
    """`fleetlog whatif`: replay the store's jobs under each policy; ETTR and lost GPU-hours;
    what checkpointing on a schedule costs in expectation, and how much faster checkpoints must
    get for that cost to fall to ``gap_points`` points of ETTR."""
    from fleetlog.ingest.store import open_union, store_files

    unknown = [p for p in policies if p not in POLICIES]
    if unknown:
        raise ValueError(f"unknown policy {unknown[0]!r}: use one of {', '.join(POLICIES)}")
    con = open_union(store_files(paths))
    try:
        records, inputs = load_records(con)
    finally:
        con.close()
    if inputs["incidents"] == 0 and inputs["failures"]:
        inputs["warning"] = "no stored incidents: run `fleetlog analyze` on the store first"
    wanted = list(dict.fromkeys([*policies, "oracle"]))
    results = {r.policy: r for r in evaluate(records, wanted, watchdog_s=watchdog_s)}
    oracle = results["oracle"].ettr
    rows = []
    for policy in dict.fromkeys(policies):
        summary: dict[str, Any] = dict(results[policy].summary())
        summary["ettr_vs_oracle"] = round(results[policy].ettr / oracle, 4) if oracle else None
        rows.append(summary)
    mtbf = {key: measured_mtbf_s(records, unwarned=unwarned)  # unwarned: fleetlog's interval
            for key, unwarned in (("node_mtbf_h", False), ("node_mtbf_unwarned_h", True))}
    for key, value in mtbf.items():
        inputs[key] = round(value / 3600, 1) if value != float("inf") else None
    inputs["watchdog_s"] = watchdog_s
    return {"policies": rows, "inputs": inputs,
            "expected": expected_costs(records, gap_points, mtbf["node_mtbf_unwarned_h"])}


def expected_costs(records: Sequence[JobRecord], gap_points: float,
                   unwarned: float | None = None) -> dict[str, Any]:
    """The floor under any policy without foresight, in expectation (``analysis.whatif``);
    ``unwarned``: the node MTBF of the unwarned failures, when the caller measured it already."""
    if unwarned is None:
        unwarned = measured_mtbf_s(records, unwarned=True)
    speedup = checkpoint_speedup_for(records, unwarned, gap_points / 100)
    out: dict[str, Any] = {
        "periodic_loss_points": round(100 * expected_periodic_loss(records, unwarned), 2),
        "gap_points": gap_points,
        "checkpoint_speedup_for_gap": round(speedup, 2) if speedup is not None else None,
    }
    if unwarned == float("inf"):
        out["note"] = (f"no unwarned failure in the store: every job's MTBF is taken as "
                       f"{NO_FAILURE_MTBF_S / 86400:.0f} days")
    return out
