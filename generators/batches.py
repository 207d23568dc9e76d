"""Per-rack and per-switch sample batches cut from whole-cluster columns, cheaply per event.

A scrape's batches always have the same shape (entities, row counts, index bytes, signals) until
the set of present GPUs changes, so each batch shape is built -- and validated by the contract's
``__post_init__`` -- once, as a template. Every scrape then clones the template and sets only its
``values``: the join of the column bytes cut from the same byte spans the template was validated
with, so their length is what the contract checks (decoding still validates everything).

Most columns (error counters, remap counts, port state) are unchanged between two scrapes; when a
whole column's bytes equal the previous scrape's, the previous per-batch cuts are kept (bytes are
immutable, so sharing them is safe and encodes identically).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from itertools import repeat
from typing import Final

from msgspec.structs import force_setattr

from fleetlog.generators.config import SOURCE
from fleetlog.ingest import contract as c

_cut: Final = bytes.__getitem__  # _cut(data, span) == data[span]
_set: Final = list.__setitem__
_join: Final = b"".join
# The C-level copy msgspec gives every Struct: it copies fields and skips __post_init__.
_clone: Final[Callable[[c.Payload], c.Payload]] = c.Payload.__copy__  # type: ignore[attr-defined]


class BatchSet:
    """Fixed-shape batches of one message type: one event per group (rack or switch)."""

    def __init__(self, type_: str, names: Sequence[str], widths: Sequence[int],
                 keys: Sequence[str], row_spans: Sequence[tuple[int, int]],
                 make: Callable[[int, dict[str, bytes]], c.Payload]) -> None:
        self.type = type_
        self.names = tuple(names)
        self.keys = list(keys)
        # Byte spans of each group, per column.
        self.spans = [[slice(w * a, w * b) for a, b in row_spans] for w in widths]
        self.make = make  # (group, columns) -> validated payload, used for the templates
        self._templates: list[c.Payload] = []
        self._data: list[bytes | None] = [None] * len(self.names)  # last scrape's column bytes
        self._cuts: list[list[bytes]] = []  # per group: the last scrape's column cuts, in order

    def events(self, t_us: int, data: Sequence[bytes], ids: Iterator[str]) -> list[c.Envelope]:
        """One event per group from each column's bytes for all groups, in column order.

        The work is per column, not per event: changed columns are cut and stored into the
        groups' lists by C-level ``map`` loops; unchanged columns (one memcmp) cost nothing;
        each event's ``values`` is then one join of its cuts.
        """
        if not self._templates:
            cuts = [list(map(_cut, repeat(d), spans)) for d, spans in zip(data, self.spans,
                                                                            strict=True)]
            self._cuts = [list(cols) for cols in zip(*cuts, strict=True)]
            self._templates = [self.make(g, dict(zip(self.names, cols, strict=True)))
                               for g, cols in enumerate(self._cuts)]
            for template in self._templates:  # values are joined in this order below
                if list(getattr(template, "signals")) != list(self.names):  # noqa: B009
                    raise ValueError(f"{self.type}: template signals out of column order")
            self._data = list(data)
        else:
            for i, d in enumerate(data):
                last = self._data[i]
                if d != last:
                    if last is not None and len(d) != len(last):  # the templates' checks hold
                        raise ValueError(f"{self.type}: column {self.names[i]!r} changed size")
                    self._data[i] = d
                    deque(map(_set, self._cuts, repeat(i),
                              map(_cut, repeat(d), self.spans[i])), maxlen=0)
        payloads = list(map(_clone, self._templates))
        deque(map(force_setattr, payloads, repeat("values"), map(_join, self._cuts)), maxlen=0)
        type_ = self.type
        version = self._templates[0].VERSION if self._templates else 1
        # ``ids`` last: zip stops at the groups without drawing an id it would not use.
        return [c.Envelope(id=i, type=type_, v=version, time_us=t_us, source=SOURCE, key=k,
                           payload=p)
                for k, p, i in zip(self.keys, payloads, ids, strict=False)]
