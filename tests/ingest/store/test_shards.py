"""Where a partition resumes: the furthest offset stored by any shard of the group."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pytest
from ingest_support import rack_event

from fleetlog.ingest.store.shards import group_offsets, handover, read_sidecar, write_sidecar
from fleetlog.ingest.store.writer import open_writer


def _shard(folder: Path, name: str, group: str, offsets: dict) -> Path:
    db = folder / f"{name}.duckdb"
    writer = open_writer(db)
    writer.write_batch([rack_event(hash(name) % 1000)], offsets=offsets)
    writer.close()
    write_sidecar(db, group, offsets)
    return db


def test_sidecar_round_trip(tmp_path: Path):
    db = tmp_path / "a.duckdb"
    write_sidecar(db, "g", {("t", 0): 5, ("t", 1): 9})
    assert read_sidecar(db) == ("g", {("t", 0): 5, ("t", 1): 9})
    assert read_sidecar(tmp_path / "none.duckdb") is None


def test_unlocked_shards_are_read_from_their_database(tmp_path: Path):
    me = tmp_path / "me.duckdb"
    _shard(tmp_path, "dead", "g", {("t", 0): 40, ("t", 1): 3})
    # The sidecar is behind the database (its owner died between commit and sidecar write).
    write_sidecar(tmp_path / "dead.duckdb", "g", {("t", 0): 10})
    _shard(tmp_path, "other-group", "h", {("t", 0): 99})
    assert group_offsets(me, "g", ["t"]) == {("t", 0): 40, ("t", 1): 3}
    assert group_offsets(me, "g", ["u"]) == {}


def test_a_locked_shard_is_read_from_its_sidecar(tmp_path: Path):
    me = tmp_path / "me.duckdb"
    live = _shard(tmp_path, "live", "g", {("t", 0): 40})
    write_sidecar(live, "g", {("t", 0): 41})
    holder = duckdb.connect(str(live))  # the running owner holds the write lock
    try:
        assert group_offsets(me, "g", ["t"]) == {("t", 0): 41}
    finally:
        holder.close()


def test_a_hand_over_brings_the_ids_the_previous_owner_landed_last(tmp_path: Path):
    me = tmp_path / "me.duckdb"
    dead = _shard(tmp_path, "dead", "g", {("t", 0): 40})  # landed rack_event(k) for some k
    landed = read_ids(dead)
    offsets, ids = handover(me, "g", ["t"], {}, {("t", 0)})
    assert offsets == {("t", 0): 40} and ids == landed
    assert handover(me, "g", ["t"], {("t", 0): 40}, {("t", 0)})[1] == set()  # not behind: none
    assert handover(me, "g", ["t"], {}, set())[1] == set()  # not assigned to me: none
    live = _shard(tmp_path, "live", "g", {("t", 1): 7})
    write_sidecar(live, "g", {("t", 1): 7}, ["x1", "x2"])
    holder = duckdb.connect(str(live))
    try:
        assert handover(me, "g", ["t"], {}, {("t", 1)})[1] == {"x1", "x2"}
    finally:
        holder.close()


def test_the_writer_skips_ids_landed_by_another_shard(tmp_path: Path):
    writer = open_writer(tmp_path / "me.duckdb")
    writer.exclude({rack_event(1).id})
    result = writer.write_batch([rack_event(1), rack_event(2)])
    assert (result.events, result.duplicates) == (1, 1)
    writer.close()


def read_ids(db: Path) -> set[str]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {r[0] for r in con.execute("SELECT event_id FROM event_log").fetchall()}
    finally:
        con.close()


def test_an_event_landed_by_two_shards_is_read_once(tmp_path: Path):
    """A replay after a partition moved lands its events in a second shard; read as one store,
    each event (its samples, its incident) counts once, and the newest-per-entity views see every
    shard."""
    from fleetlog.ingest import contract as c
    from fleetlog.ingest.store import open_union
    from fleetlog.ingest.store.writer import land

    def incident(i: int, confidence: float, t: int) -> c.Envelope:
        return c.make_event(c.IncidentOpened(
            incident_id=f"inc-{i}", start_us=t, end_us=None, category="gpu_hw",
            root_entity="gpu:n1/0", confidence=confidence, candidates=[], evidence=[]),
            time_us=t, source="test", id=f"incident-{i}-{t}")

    shared = [rack_event(1), rack_event(2), incident(1, 0.5, 10)]
    land(tmp_path / "a.duckdb", [*shared, rack_event(3)])
    land(tmp_path / "b.duckdb", [*shared, rack_event(4), incident(1, 0.9, 20)])
    union = open_union([tmp_path])
    assert union.execute("SELECT count(*), count(DISTINCT event_id) FROM event_log").fetchone() \
        == (6, 6)
    assert union.execute("SELECT count(*) FROM gpu_samples").fetchone() == (4 * 32,)
    assert union.execute(
        "SELECT count(*) FROM (SELECT DISTINCT node, gpu, ts FROM gpu_samples)").fetchone() \
        == (4 * 32,)
    # The newest state of incident 1 is in shard b only: the union's view sees it.
    assert union.execute("SELECT incident_id, confidence FROM incidents").fetchall() \
        == [("inc-1", 0.9)]


def test_the_cross_shard_duplicates_are_found_once_per_state_of_the_shards(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Every command opens the store again: the duplicate scan is kept beside the shards and
    reused while they are unchanged; a shard written since is scanned afresh."""
    from fleetlog.ingest.store import database as store
    from fleetlog.ingest.store.writer import land

    shared = [rack_event(1), rack_event(2)]
    land(tmp_path / "a.duckdb", [*shared, rack_event(3)])
    land(tmp_path / "b.duckdb", [*shared, rack_event(4)])
    scans = []
    real_scan = store._find_cross_shard_duplicates

    def counted(con: Any, shards: int) -> None:
        scans.append(shards)
        real_scan(con, shards)

    def events(con: Any) -> tuple[int, int]:
        try:
            return con.execute("SELECT count(*), count(DISTINCT event_id) FROM event_log"
                               ).fetchone()
        finally:
            con.close()

    monkeypatch.setattr(store, "_find_cross_shard_duplicates", counted)
    assert events(store.open_union([tmp_path])) == (4, 4)
    assert events(store.open_union([tmp_path])) == (4, 4)  # from the kept result
    assert scans == [2]
    assert len(list((tmp_path / ".fleetlog").glob("duplicates-*.parquet"))) == 1
    land(tmp_path / "b.duckdb", [rack_event(3)])  # b now shares event 3 with a as well
    assert events(store.open_union([tmp_path])) == (4, 4)
    assert scans == [2, 2]
