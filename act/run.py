"""``act --db``: carry out the recommendations in a store, once, and land every attempt there.

Reads the recommendations and the attempts already made from the store, acts on the ones not
attempted yet (``act.actor``), and lands each new attempt in the same store through the one
``StoreSink`` as soon as it is made, so a run killed halfway and started again repeats nothing.
A dry run opens the store read-only and lands nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fleetlog.act.actor import Actor, ActPolicy, NameMap, Outcome
from fleetlog.act.backend import Backend
from fleetlog.act.source import load_attempts, load_recommendations
from fleetlog.ingest.store import open_store
from fleetlog.ingest.store.sink import StoreSink


@dataclass
class ActResult:
    outcomes: list[Outcome] = field(default_factory=list)  # this run's (not done_before)
    done_before: int = 0  # recommendations whose action an earlier run attempted

    def totals(self) -> dict[str, int]:
        out: dict[str, int] = {"done_before": self.done_before} if self.done_before else {}
        for o in self.outcomes:
            out[o.outcome] = out.get(o.outcome, 0) + 1
        if escalated := sum(o.escalate for o in self.outcomes):
            out["escalated"] = escalated
        return out


def act_on_store(db: str | Path, backend: Backend, policy: ActPolicy,
                 names: NameMap | None = None,
                 on_outcome: Callable[[Outcome], None] | None = None,
                 resume: Sequence[str] = ()) -> ActResult:
    """Act on every recommendation of the store ``db`` not attempted yet (module docstring);
    with ``resume``, instead return those nodes (fleetlog's names) to service, where fleetlog
    drained them."""
    con = open_store(db, read_only=not policy.execute)
    try:
        sink = StoreSink.sharing(con) if policy.execute else None

        def seen(outcome: Outcome) -> None:
            if on_outcome is not None:
                on_outcome(outcome)

        actor = Actor(backend, policy, names, sink=sink, history=load_attempts(con),
                      on_outcome=seen)
        outcomes = ([actor.resume(node) for node in resume] if resume
                    else actor.act(load_recommendations(con)))
        result = ActResult([o for o in outcomes if o.outcome != "done_before"],
                           sum(o.outcome == "done_before" for o in outcomes))
        if sink is not None:
            sink.close()
        return result
    finally:
        con.close()
