"""StoreWriter: column-wise landing, dedup, dead letters, offsets in the same transaction."""

from __future__ import annotations

import math
from pathlib import Path

import duckdb
import numpy as np
import pytest
from ingest_support import job_event, rack_event

from fleetlog.ingest import contract as c
from fleetlog.ingest.contract import DeadLetter
from fleetlog.ingest.store import StoreError
from fleetlog.ingest.store.writer import land, open_writer


def _rows(db: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_samples_land_column_wise_with_missing_values_as_null(db_path: Path):
    full = rack_event(1)
    partial = c.make_event(
        c.gpu_batch(["n9"], [2], [0, 1], {"power_w": [700.0, math.nan], "util_pct": [1.0, 2.0]}),
        time_us=5, source="t", id="partial")
    result = land(db_path, [full, partial])
    assert result.events == 2 and result.gpu_samples == 34
    power = np.frombuffer(full.payload.columns["power_w"], "<f4")  # type: ignore[attr-defined]
    stored = _rows(db_path, "SELECT power_w FROM gpu_samples WHERE event_id = 'rack-00000001' "
                            "ORDER BY node, gpu")
    assert np.allclose([r[0] for r in stored], power)
    assert _rows(db_path, "SELECT gpu, power_w, util_pct, gpu_temp_c FROM gpu_samples "
                          "WHERE node = 'n9' ORDER BY gpu") == [(0, 700.0, 1.0, None),
                                                                 (1, None, 2.0, None)]


def test_an_event_seen_before_is_skipped(db_path: Path):
    events = [rack_event(i) for i in range(3)] + [job_event(1)]
    assert land(db_path, events + events[:1]).duplicates == 1
    again = land(db_path, events)
    assert (again.events, again.duplicates) == (0, 4)
    assert _rows(db_path, "SELECT count(*) FROM event_log") == [(4,)]
    assert _rows(db_path, "SELECT count(*) FROM gpu_samples") == [(96,)]


def test_rows_dead_letters_and_offsets_commit_together(db_path: Path):
    writer = open_writer(db_path)
    dead = [DeadLetter(origin="t.gpu", stage="envelope", error="bad", raw=b"\x00", partition=1,
                       offset=7)]
    writer.write_batch([rack_event(1)], dead, {("t.gpu", 1): 8})
    assert writer.stored_offsets() == {("t.gpu", 1): 8}
    writer.close()
    assert _rows(db_path, "SELECT origin, partition, \"offset\", stage, raw FROM dead_letters") \
        == [("t.gpu", 1, 7, "envelope", b"\x00")]


def test_a_failed_batch_leaves_nothing(db_path: Path, monkeypatch: pytest.MonkeyPatch):
    writer = open_writer(db_path)
    writer.write_batch([rack_event(1)], offsets={("t", 0): 1})

    def broken(self, table, data):  # the second table's insert fails like a full disk would
        if table != "event_log":
            raise duckdb.IOException("IO Error: No space left on device")
        original(self, table, data)

    from fleetlog.ingest.store.writer import StoreWriter
    original = StoreWriter._append
    monkeypatch.setattr(StoreWriter, "_append", broken)
    with pytest.raises(StoreError, match="disk is full"):
        writer.write_batch([rack_event(2)], offsets={("t", 0): 2})
    monkeypatch.undo()
    assert writer.stored_offsets() == {("t", 0): 1}
    assert writer.con.execute("SELECT count(*) FROM event_log").fetchone() == (1,)
    writer.close()


def test_an_event_the_store_refuses_becomes_a_dead_letter(db_path: Path):
    good = c.make_event(c.XidReported(node="n1", gpu=1, xid=79), time_us=1, source="t")
    bad = c.make_event(c.XidReported(node="n1", gpu=1, xid=2**40), time_us=2, source="t")
    result = land(db_path, [good, bad, job_event(3)])
    assert (result.events, result.dead_letters) == (2, 1)
    assert _rows(db_path, "SELECT stage, event_id FROM dead_letters") == [("validate", bad.id)]
    assert _rows(db_path, "SELECT xid FROM xid_events") == [(79,)]


def test_every_row_table_lands(db_path: Path):
    events = [
        c.make_event(c.NodeRegistered(node="n1", rack="r1", region="eu", vcluster="a",
                                      gpu_count=8, gpu_model="H100", nic_count=8), time_us=1,
                     source="t"),
        c.make_event(c.NodeWentDown(node="n1", reason="psu"), time_us=2, source="t"),
        c.make_event(c.FaultInjected(fault_id="f1", category="gpu_hw", entity="gpu:n1/1",
                                     start_us=1, affected=["node:n1"]), time_us=3, source="t"),
        c.make_event(c.IncidentOpened(incident_id="i1", start_us=1, category="gpu_hw",
                                      root_entity="gpu:n1/1", confidence=0.9), time_us=4,
                     source="t"),
        c.make_event(c.RecommendationIssued(incident_id="i1", target="gpu:n1/1",
                                            action="RESET_GPU", reason="xid"), time_us=5,
                     source="t"),
        c.make_event(c.port_batch(["leaf1"], [2], [1, 2], {"symbol_error": [0.0, 3.0]}),
                     time_us=6, source="t"),
        job_event(7),
    ]
    result = land(db_path, events)
    assert result.events == len(events)
    counts = dict(_rows(db_path, """SELECT 'nodes', count(*) FROM nodes UNION ALL
        SELECT 'host', count(*) FROM host_events UNION ALL
        SELECT 'truth', count(*) FROM truth_faults UNION ALL
        SELECT 'incidents', count(*) FROM incidents UNION ALL
        SELECT 'recs', count(*) FROM recommendations UNION ALL
        SELECT 'ports', count(*) FROM port_samples UNION ALL
        SELECT 'jobs', count(*) FROM job_events"""))
    assert counts == {"nodes": 1, "host": 1, "truth": 1, "incidents": 1, "recs": 1, "ports": 2,
                      "jobs": 1}


def test_snapshot_is_readable_while_the_writer_holds_the_store(tmp_path: Path) -> None:
    """Readers use the snapshot: DuckDB lets nobody else open a writer's file."""
    import subprocess
    import sys

    from fleetlog.ingest import contract as c
    from fleetlog.ingest.store import open_store
    from fleetlog.ingest.store.writer import Snapshotter, StoreWriter

    snap = tmp_path / "snap.duckdb"
    # A writer that publishes snapshots ATTACHes the copy: it keeps file access (as ingesters do).
    writer = StoreWriter(open_store(tmp_path / "live.duckdb", external_access=True),
                         snapshot=Snapshotter(snap, 0.0))
    writer.write_batch([c.make_event(c.XidReported(node="n1", gpu=0, xid=79), time_us=1,
                                     source="t")])
    reader = [sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1], "
              "read_only=True); print(c.execute('SELECT count(*) FROM xid_events').fetchone()[0])"]
    live = subprocess.run([*reader, str(tmp_path / "live.duckdb")], capture_output=True,
                          text=True)
    assert live.returncode != 0 and "lock" in live.stderr.lower()
    copy = subprocess.run([*reader, str(snap)], capture_output=True, text=True)
    assert copy.returncode == 0, copy.stderr
    assert copy.stdout.strip() == "1"
    writer.write_batch([c.make_event(c.XidReported(node="n2", gpu=1, xid=48), time_us=2,
                                     source="t")])
    writer.close()
    assert subprocess.run([*reader, str(snap)], capture_output=True,
                          text=True).stdout.strip() == "2"


# -- hostile input (issue #21) --------------------------------------------------------------------

def _letters(db: Path) -> list[tuple]:
    return _rows(db, 'SELECT stage, event_id, origin, partition, "offset", error, raw '
                     "FROM dead_letters ORDER BY stage, event_id")


def test_an_id_stored_with_other_content_is_a_conflict_not_a_duplicate(db_path: Path):
    """An id names one fact: the same id with another payload is flagged (a dead letter at
    stage ``conflict`` and a count), and the stored event is kept."""
    xid = c.make_event(c.XidReported(node="n1", gpu=1, xid=79), time_us=5, source="t", id="e1")
    forged = c.make_event(c.XidReported(node="n1", gpu=1, xid=48), time_us=5, source="t",
                          id="e1")
    rack = rack_event(1)
    land(db_path, [xid, rack])
    again = land(db_path, [xid, rack])
    assert (again.duplicates, again.conflicts, again.dead_letters) == (2, 0, 0)
    other = rack_event(2)  # another rack's values under the stored rack's id
    forged_rack = c.make_event(other.payload, time_us=rack.time_us, source=rack.source,
                               id=rack.id, key=rack.key)
    writer = open_writer(db_path)
    result = writer.write_batch([forged, forged_rack], (), {("t.jobs", 2): 8},
                                [("t.jobs", 2, 7), ("t.gpu", 0, 3)])
    writer.close()
    assert (result.events, result.duplicates, result.conflicts, result.dead_letters) == (
        0, 0, 2, 2)
    letters = _letters(db_path)
    assert [(s, i, o, p, n) for s, i, o, p, n, _, _ in letters] == [
        ("conflict", "e1", "t.jobs", 2, 7), ("conflict", rack.id, "t.gpu", 0, 3)]
    assert "payload differ" in letters[0][5] and "stored event is kept" in letters[0][5]
    assert c.decode(letters[0][6]) == forged
    assert _rows(db_path, "SELECT xid FROM xid_events") == [(79,)]
    assert _rows(db_path, "SELECT count(*) FROM gpu_samples") == [(32,)]


def test_a_conflict_inside_one_batch_is_flagged_too(db_path: Path):
    first = c.make_event(c.XidReported(node="n1", gpu=1, xid=79), time_us=5, source="t", id="e")
    second = c.make_event(c.XidReported(node="n2", gpu=1, xid=79), time_us=5, source="t", id="e")
    result = land(db_path, [first, first, second])
    assert (result.events, result.duplicates, result.conflicts) == (1, 1, 1)
    assert [row[0:2] for row in _letters(db_path)] == [("conflict", "e")]


def test_a_refused_event_keeps_its_kafka_topic_partition_and_offset(db_path: Path):
    """The bisection's dead letters say where the event came from, like every other one."""
    from fleetlog.ingest.pipeline import Pending

    good = c.make_event(c.XidReported(node="n1", gpu=1, xid=79), time_us=1, source="t")
    bad = c.make_event(c.XidReported(node="n1", gpu=1, xid=2**40), time_us=2, source="t")
    pending = Pending()
    pending.add_values(("p.gpu", 3), "p.gpu", [(10, c.encode(rack_event(1)))], 11)
    pending.add_values(("p.host", 1), "p.host", [(40, c.encode(good)), (41, b"junk"),
                                                 (42, c.encode(bad))], 43)
    batch = pending.take()
    writer = open_writer(db_path)
    result = writer.write_batch(batch.events, batch.dead, batch.offsets, batch.origins)
    writer.close()
    assert (result.events, result.dead_letters) == (2, 2)
    assert [(s, o, p, n) for s, _, o, p, n, _, _ in _letters(db_path)] == [
        ("envelope", "p.host", 1, 41), ("validate", "p.host", 1, 42)]


def test_a_huge_input_keeps_a_bounded_dead_letter_that_says_its_size(db_path: Path):
    huge = b"\x93" + b"x" * (10 * 1024 * 1024)
    from fleetlog.ingest.contract.dead_letter import MAX_RAW
    from fleetlog.ingest.pipeline import Pending

    pending = Pending()
    pending.add_values(("p.gpu", 0), "p.gpu", [(5, huge)], 6)
    batch = pending.take()
    land_writer = open_writer(db_path)
    land_writer.write_batch(batch.events, batch.dead, batch.offsets, batch.origins)
    land_writer.close()
    [(stage, _, origin, partition, offset, error, raw)] = _letters(db_path)
    assert (stage, origin, partition, offset) == ("envelope", "p.gpu", 0, 5)
    assert raw == huge[:MAX_RAW] and MAX_RAW == 4096
    assert f"input of {len(huge):,} bytes" in error
