"""How every projection applies an event: a table from payload type to handler; and the
``Transition`` record the state machines (node health, jobs) keep.

A table rather than ``functools.singledispatchmethod``: the job history folds every step report
(hundreds of thousands of events per day of a small fleet), and one dict look-up per event costs
a small fraction of singledispatchmethod's per-call dispatch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from fleetlog.ingest import contract as c

State = TypeVar("State")
# (projector, payload, event) -> None; the payload's type is the table key.
Handler = Callable[[Any, Any, c.Envelope], None]


@dataclass(frozen=True)
class Transition:
    """``entity`` moved from state ``before`` to ``after`` at ``ts_us`` (event ``event_id``)."""

    ts_us: int
    entity: str
    before: str
    after: str
    why: str
    event_id: str


class Projector(Generic[State]):
    """Applies events to ``state`` in place. Subclasses list their handlers in ``HANDLERS``;
    events of any other type leave the state unchanged."""

    HANDLERS: ClassVar[Mapping[type[c.Payload], Handler]] = {}

    def __init__(self, state: State) -> None:
        self.state = state

    def fold(self, events: Iterable[c.Envelope]) -> State:
        fold_together((self,), events)
        return self.state


def fold_together(projectors: Sequence[Projector[Any]], events: Iterable[c.Envelope]) -> None:
    """One pass over ``events`` applying each to every projector, in order, that handles its
    type (one table look-up per event, not one per projector)."""
    table: dict[type[c.Payload], list[tuple[Projector[Any], Handler]]] = {}
    for projector in projectors:
        for kind, handler in projector.HANDLERS.items():
            table.setdefault(kind, []).append((projector, handler))
    for event in events:
        for projector, handler in table.get(type(event.payload), ()):
            handler(projector, event.payload, event)
