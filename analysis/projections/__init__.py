"""Projections: derived state as pure folds over contract events — the one place job and node
state come from.

Each projection is ``fold(events, start=None) -> state``: the state depends only on the events
(in order), never on a clock or the store, so a replay rebuilds it identically and folding in
chunks equals folding at once (``fold(b, fold(a)) == fold(a + b)``). ``start`` is copied, never
mutated. The same folds run over plain lists (tests) and over events read back from the store
(``analysis.events.fold_store``).

- ``Topology`` (``topology``): racks, nodes, switches and cables from inventory events.
- ``NodeHealth`` (``health``): a state machine per node (up -> degraded -> maintenance -> down
  -> up) with every transition kept, and the spans each node was out of service.
- ``Jobs`` (``jobs``): job state (submitted, placed, running, checkpointing, failed, restarting,
  migrated, completed, cancelled), the nodes each job held over time (placements), its
  checkpoints, failures and restarts.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field

from fleetlog.analysis.projections.health import (
    NODE_STATES,
    HealthProjector,
    NodeHealth,
    Outage,
    fold_node_health,
)
from fleetlog.analysis.projections.jobs import (
    JOB_STATES,
    Checkpoint,
    JobFailure,
    JobInfo,
    Jobs,
    JobsProjector,
    Placement,
    fold_jobs,
)
from fleetlog.analysis.projections.projector import Transition, fold_together
from fleetlog.analysis.projections.topology import (
    NodeInfo,
    Topology,
    TopologyProjector,
    fold_topology,
)
from fleetlog.ingest import contract as c

__all__ = [
    "JOB_STATES", "NODE_STATES", "Checkpoint", "JobFailure", "JobInfo", "Jobs", "NodeHealth",
    "NodeInfo", "Outage", "Placement", "Projections", "Topology", "Transition", "fold_all",
    "fold_jobs", "fold_node_health", "fold_topology",
]


@dataclass
class Projections:
    topology: Topology = field(default_factory=Topology)
    health: NodeHealth = field(default_factory=NodeHealth)
    jobs: Jobs = field(default_factory=Jobs)


def fold_all(events: Iterable[c.Envelope], start: Projections | None = None) -> Projections:
    """One pass over ``events`` updating every projection (same result as the separate folds)."""
    state = copy.deepcopy(start) if start is not None else Projections()
    fold_together((TopologyProjector(state.topology), HealthProjector(state.health),
                   JobsProjector(state.jobs)), events)
    return state
