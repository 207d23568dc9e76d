"""Where each Kafka partition resumes when several ingesters (one consumer group) share the work.

Each ingester writes its own DuckDB file (a shard) and stores the next offset of every partition
it landed in that file, in the same transaction as the rows. A partition can move between members
on a rebalance, so the place to resume is the furthest offset stored by ANY shard of the group:
the shards of one group live in one folder, and each keeps a small sidecar file
(``<db>.offsets.json``: group and offsets) that others can read while the shard is locked.

- A shard whose owner is gone (killed, stopped) is unlocked: its DuckDB file is read directly
  (read-only; DuckDB replays its write-ahead log), so nothing committed is missed.
- A shard whose owner is running is locked: its sidecar is read instead. The owner rewrites the
  sidecar from its database before it joins the group, and after every committed batch; a
  rebalance waits for the batch in flight, so the sidecar is current whenever a partition moves.
- Either also gives the ids of the events that shard landed last: a duplicate (producer retry)
  whose first copy the previous owner landed just before the hand-over is skipped by the new one.

Kafka's committed offsets are only written for lag monitoring, never read back to position.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import duckdb

TP = tuple[str, int]
SIDECAR_SUFFIX: Final = ".offsets.json"


def sidecar_path(db: Path) -> Path:
    return db.with_name(db.name + SIDECAR_SUFFIX)


RECENT_IDS: Final = 2048  # ids of the last events landed, kept in the sidecar


@dataclass(frozen=True)
class Shard:
    """What one shard of the group stored: offsets, and the ids of the events it landed last."""

    path: Path
    offsets: dict[TP, int]
    recent_ids: list[str]


def write_sidecar(db: Path, group: str, offsets: Mapping[TP, int],
                  recent_ids: Iterable[str] = ()) -> None:
    """Atomically replace ``db``'s sidecar (write a temporary file, then rename it)."""
    path = sidecar_path(db)
    body = {"group": group, "offsets": [[t, p, o] for (t, p), o in sorted(offsets.items())],
            "recent_ids": list(recent_ids)[-RECENT_IDS:]}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(body), "utf-8")
    tmp.replace(path)


def read_sidecar(db: Path) -> tuple[str, dict[TP, int]] | None:
    body = _sidecar(db)
    return None if body is None else (body[0], body[1])


def _sidecar(db: Path) -> tuple[str, dict[TP, int], list[str]] | None:
    try:
        body = json.loads(sidecar_path(db).read_text("utf-8"))
        offsets = {(str(t), int(p)): int(o) for t, p, o in body["offsets"]}
        return str(body["group"]), offsets, [str(i) for i in body.get("recent_ids", [])]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _stored(db: Path) -> Shard | None:
    """A shard as its database says, or None when its running owner holds the lock."""
    try:
        con = duckdb.connect(str(db), read_only=True)
    except duckdb.Error:
        return None  # locked by its running owner (or not a store): use the sidecar
    try:
        # A sibling's file is data, not code: a tampered one may have swapped a table for a view
        # that reads files, so nothing here may reach a file (docs/store.md).
        con.execute("SET enable_external_access = false")
        rows = con.execute("SELECT topic, partition, next_offset FROM ingest_offsets").fetchall()
        recent = con.execute("SELECT event_id FROM event_log ORDER BY landed_at DESC LIMIT ?",
                             [RECENT_IDS * 4]).fetchall()
    except duckdb.Error:
        return Shard(db, {}, [])
    finally:
        con.close()
    return Shard(db, {(t, p): o for t, p, o in rows}, [r[0] for r in recent])


def sibling_shards(db: Path, group: str) -> list[Path]:
    """Other shards of ``group`` in ``db``'s folder (known by their sidecars)."""
    found: list[Path] = []
    for path in sorted(db.parent.glob("*.duckdb")):
        if path.resolve() == db.resolve():
            continue
        sidecar = read_sidecar(path)
        if sidecar is not None and sidecar[0] == group:
            found.append(path)
    return found


def siblings(db: Path, group: str) -> list[Shard]:
    """The OTHER shards of ``group``: from their database when unlocked, else their sidecar."""
    out: list[Shard] = []
    for path in sibling_shards(db, group):
        shard = _stored(path)
        if shard is None:
            body = _sidecar(path)
            shard = Shard(path, body[1] if body else {}, body[2] if body else [])
        out.append(shard)
    return out


def group_offsets(db: Path, group: str, topics: Iterable[str]) -> dict[TP, int]:
    """Furthest stored offset per partition of ``topics`` over the OTHER shards of ``group``."""
    return handover(db, group, topics, {}, set())[0]


def handover(
    db: Path, group: str, topics: Iterable[str], mine: Mapping[TP, int], assigned: set[TP],
) -> tuple[dict[TP, int], set[str]]:
    """The furthest offset of another shard per partition, and the ids landed last by the shards
    that ``assigned`` partitions come from (those where they are ahead of ``mine``).

    A producer retry puts the same event at two nearby offsets; when a partition changes hands
    between them, the new owner must skip the second copy although its own store never saw the
    first: those ids are what it checks it against.
    """
    wanted = set(topics)
    best: dict[TP, int] = {}
    owner: dict[TP, Shard] = {}
    for shard in siblings(db, group):
        for tp, offset in shard.offsets.items():
            if tp[0] in wanted and offset > best.get(tp, -1):
                best[tp], owner[tp] = offset, shard
    ids: set[str] = set()
    for tp, shard in owner.items():
        if tp in assigned and best[tp] > mine.get(tp, -1):
            ids.update(shard.recent_ids)
    return best, ids
