"""Precursor incidents and the jobs they warn: true warnings, false alarms, node swaps.

A precursor incident (rising ECC, SRAM errors, link symbol errors, a hot GPU) *warns* a job when
it was detected while the job ran on one of its nodes, before the job's failure and still open
(its last symptom at most ``STILL_OPEN_US`` before the failure). A precursor on a job's nodes
with no failure of the job while it was open is a *false alarm* for that job: acting on it
(checkpoint now, swap the node) costs without saving anything, and the what-if replay charges it.

*Swap*: when the precursor sits on one node (a GPU, NIC, node, or a cable facing one node) and
the job's virtual cluster has a healthy idle node then, fleetlog checkpoints now and restarts the
job from that checkpoint without the suspect node (what NVSentinel-style cordon-and-drain and
ByteRobust's eviction of suspect machines do). The failure then never reaches the job: it pays
one checkpoint and one restart, and no work since a checkpoint is lost.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from fleetlog.analysis.capacity import Capacity
from fleetlog.analysis.job_history import US, JobHistory
from fleetlog.analysis.stored_incidents import StoredIncident
from fleetlog.analysis.whatif import Alarm

# Incidents that come before a failure: rising ECC, SRAM errors, a hot GPU, link symbol errors.
PRECURSOR_CATEGORIES: Final = frozenset({"gpu_hbm", "gpu_sram", "gpu_thermal", "network"})
STILL_OPEN_US: Final = 600 * US


def warnings_for(h: JobHistory, at_us: int, nodes: set[str],
                 precursors: Sequence[StoredIncident]) -> list[StoredIncident]:
    """The precursors that warned a failure of ``h`` at ``at_us`` on ``nodes``."""
    return [p for p in precursors
            if p.nodes & nodes and h.first_us <= p.incident.detect_us < at_us
            and p.incident.end_us >= at_us - STILL_OPEN_US]


def earliest_warning(h: JobHistory, at_us: int, nodes: set[str],
                     precursors: Sequence[StoredIncident]) -> tuple[float, StoredIncident | None]:
    """The earliest-detected precursor that warned a failure of ``h`` at ``at_us`` on
    ``nodes``, and how long before ``at_us`` it was detected, in seconds ((0.0, None): none)."""
    first = min(warnings_for(h, at_us, nodes, precursors),
                key=lambda p: (p.incident.detect_us, p.incident_id), default=None)
    return ((at_us - first.incident.detect_us) / US, first) if first else (0.0, None)


def can_swap(capacity: Capacity, h: JobHistory, p: StoredIncident) -> bool:
    """One suspect node, and a healthy idle node of the job's pool to take its place."""
    if len(p.nodes) != 1:
        return False
    return not capacity.check(h, p.incident.detect_us, sorted(p.nodes)).short


def false_alarms(h: JobHistory, precursors: Sequence[StoredIncident],
                 capacity: Capacity) -> tuple[Alarm, ...]:
    """Precursors detected on the job's nodes while it ran, with no failure of the job while
    they were open (from their first symptom to ``STILL_OPEN_US`` after their last)."""
    out = []
    for p in precursors:
        inc = p.incident
        detect = inc.detect_us
        if (not h.running_at(detect) or not p.nodes & set(h.nodes_at(detect))
                or h.failed_between(inc.start_us, inc.end_us + STILL_OPEN_US)):
            continue
        out.append(Alarm((detect - h.first_us) / US, can_swap(capacity, h, p)))
    return tuple(out)
