"""The hourly rollups (ingest/store/rollups.py): kept by the writer as hours close, used only
while exact (same version, same source rows), rolled up again after late samples, rebuilt by
``fleetlog rollup``, never read through a union of shards."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import polars as pl
import pytest
from click.testing import CliRunner

from fleetlog.analysis.context import build_context
from fleetlog.analysis.detectors import scans
from fleetlog.cli.main import cli
from fleetlog.ingest import contract as c
from fleetlog.ingest.store import open_store, open_union, rollups
from fleetlog.ingest.store.writer import StoreWriter, land
from tests.analysis.fleet_builders import T0, Cluster

HOUR = rollups.CHUNK_US
SCRAPES = 800  # 2 h 13 min at 10 s: hours 0 and 1 close (10-minute grace); hour 2 at the end


def _stored(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, int], int]:
    rows = con.execute("SELECT name, chunk_us, source_rows FROM rollup_chunks").fetchall()
    return {(name, (chunk - T0) // HOUR): rows for name, chunk, rows in rows}


def _hour_rows(con: duckdb.DuckDBPyConnection, table: str, hour: int) -> int:
    lo = T0 + hour * HOUR
    where = rollups.chunk_where(lo, lo + HOUR)
    return int(con.execute(f"SELECT count(*) FROM {table} WHERE {where}").fetchall()[0][0])


@pytest.fixture
def landed(tmp_path: Path) -> Path:
    path = tmp_path / "fleet.duckdb"
    land(path, Cluster(nodes=3, racks_of=2, scrapes=SCRAPES, gpus=2).build())
    return path


def test_a_writer_rolls_up_each_hour_once_it_has_closed_and_the_rest_when_done(
        tmp_path: Path) -> None:
    path = tmp_path / "fleet.duckdb"
    writer = StoreWriter(open_store(path))
    writer.write_batch(Cluster(nodes=3, racks_of=2, scrapes=SCRAPES, gpus=2).build())
    stored = _stored(writer.con)
    assert {hour for _name, hour in stored} == {0, 1}  # hour 2 has not closed
    assert {name for name, _hour in stored} == set(rollups.ROLLUPS)
    writer.close()  # done: the open hour too
    con = open_store(path, read_only=True)
    try:
        stored = _stored(con)
        assert {hour for _name, hour in stored} == {0, 1, 2}
        for (name, hour), rows in stored.items():
            assert rows == _hour_rows(con, rollups.ROLLUPS[name].source, hour) > 0
            assert con.execute(f"SELECT count(*) FROM rollup_{name} WHERE chunk_us = ?",
                               [T0 + hour * HOUR]).fetchall()[0][0] > 0
        hours = [T0, T0 + HOUR, T0 + 2 * HOUR, T0 + 3 * HOUR]
        assert rollups.valid_chunks(con, rollups.ROLLUPS["gpu_buckets"], hours) == hours[:3]
    finally:
        con.close()


def test_a_stored_hour_of_another_version_or_row_count_is_not_used(landed: Path) -> None:
    con = open_store(landed)
    try:
        gpu_buckets = rollups.ROLLUPS["gpu_buckets"]
        con.execute("UPDATE rollup_chunks SET version = 'older' WHERE name = 'gpu_buckets' "
                    "AND chunk_us = ?", [T0])
        con.execute("UPDATE rollup_chunks SET source_rows = source_rows - 1 "
                    "WHERE name = 'gpu_buckets' AND chunk_us = ?", [T0 + HOUR])
        assert rollups.valid_chunks(con, gpu_buckets, [T0, T0 + HOUR]) == []
        # Rolling up again replaces the other version's table and record.
        rollups.roll(con, T0 + HOUR)
        versions = {v for (v,) in con.execute(
            "SELECT version FROM rollup_chunks WHERE name = 'gpu_buckets'").fetchall()}
        assert versions == {gpu_buckets.version}
        assert rollups.valid_chunks(con, gpu_buckets, [T0, T0 + HOUR]) == [T0 + HOUR]
    finally:
        con.close()


def test_late_samples_make_an_hour_stale_until_the_writer_rolls_it_up_again(
        landed: Path) -> None:
    cluster = Cluster(nodes=4, racks_of=2, scrapes=SCRAPES, gpus=2)  # a fourth node, late
    late = [e for e in cluster.build()
            if isinstance(e.payload, c.GpuSampled) and e.time_us < T0 + HOUR
            and "n00004" in e.payload.nodes]
    assert late
    writer = StoreWriter(open_store(landed))
    writer.write_batch(late)
    con = writer.con
    gpu_buckets = rollups.ROLLUPS["gpu_buckets"]
    assert rollups.valid_chunks(con, gpu_buckets, [T0, T0 + HOUR]) == [T0 + HOUR]  # stale
    assert writer.rollups.stale  # waiting for the hour to go quiet
    writer.close()  # done: the stale hour is rolled up again
    con = open_store(landed, read_only=True)
    try:
        assert rollups.valid_chunks(con, gpu_buckets, [T0, T0 + HOUR]) == [T0, T0 + HOUR]
        assert _stored(con)[("gpu_buckets", 0)] == _hour_rows(con, "gpu_samples", 0)
    finally:
        con.close()


def _split(events: list[c.Envelope]) -> tuple[list[c.Envelope], list[c.Envelope]]:
    """The cluster's events as two ingesters of one group would land them: racks and switches
    split between them (each sample event is one rack's or one switch's scrape)."""
    first: list[c.Envelope] = []
    second: list[c.Envelope] = []
    for event in events:
        payload = event.payload
        if isinstance(payload, c.GpuSampled):
            (second if "n00003" in payload.nodes else first).append(event)
        elif isinstance(payload, c.PortSampled):
            (second if payload.switches[0].endswith(("1", "3", "5", "7")) else first).append(event)
        else:
            first.append(event)
    return first, second


def _union_scans(paths: list[Path]) -> tuple[list[int], dict[str, pl.DataFrame]]:
    """The hours read from rollups through the union of ``paths``, and its scans."""
    con = open_union(paths)
    try:
        ctx = build_context(con)
        assert ctx is not None
        hours = list(range(T0, T0 + 3 * HOUR, HOUR))
        used = rollups.valid_chunks(con, rollups.ROLLUPS["gpu_buckets"], hours)
        frames = {"gpu_buckets": scans.gpu_buckets(ctx).sort("node", "gpu", "b"),
                  "gpu_summary": scans.gpu_summary(ctx),
                  "port_buckets": scans.port_buckets(ctx).sort("switch", "port", "b")}
        return used, frames
    finally:
        con.close()


def _without_rollups(path: Path) -> None:
    con = open_store(path)
    try:
        con.execute("DELETE FROM rollup_chunks")
    finally:
        con.close()


def test_a_union_of_shards_reads_their_rollups_where_they_are_the_unions(tmp_path: Path) -> None:
    first, second = _split(Cluster(nodes=4, racks_of=2, scrapes=SCRAPES, gpus=2).build())
    a, b = tmp_path / "a.duckdb", tmp_path / "b.duckdb"
    land(a, first)
    land(b, second)
    used, frames = _union_scans([a, b])
    assert used == [T0, T0 + HOUR, T0 + 2 * HOUR]
    _without_rollups(a)
    _without_rollups(b)
    none, samples = _union_scans([a, b])
    assert none == []
    for name, frame in frames.items():
        assert frame.height > 0 and frame.equals(samples[name]), name


def test_a_union_reads_the_samples_of_an_hour_whose_node_two_shards_hold(tmp_path: Path) -> None:
    events = Cluster(nodes=4, racks_of=2, scrapes=SCRAPES, gpus=2).build()
    first, second = _split(events)
    # Rack 2 moved to the first ingester for the last 20 minutes of hour 1 (a rebalance).
    moved = [e for e in second if isinstance(e.payload, c.GpuSampled)
             and T0 + HOUR + 40 * 60 * 1_000_000 <= e.time_us < T0 + 2 * HOUR]
    assert moved
    a, b = tmp_path / "a.duckdb", tmp_path / "b.duckdb"
    land(a, first + moved)
    land(b, [e for e in second if e not in moved])
    used, frames = _union_scans([a, b])
    assert used == [T0, T0 + 2 * HOUR]
    _without_rollups(a)
    _without_rollups(b)
    for name, frame in _union_scans([a, b])[1].items():
        assert frame.equals(frames[name]), name


def test_a_union_reads_the_samples_of_an_hour_with_events_both_shards_landed(
        tmp_path: Path) -> None:
    first, second = _split(Cluster(nodes=4, racks_of=2, scrapes=SCRAPES, gpus=2).build())
    again = [e for e in first if isinstance(e.payload, c.PortSampled) and e.time_us < T0 + HOUR]
    a, b = tmp_path / "a.duckdb", tmp_path / "b.duckdb"
    land(a, first)
    land(b, second + again[:5])  # five scrapes of hour 0 sent again after a move
    con = open_union([a, b])
    try:
        hours = [T0, T0 + HOUR]
        assert rollups.valid_chunks(con, rollups.ROLLUPS["port_buckets"], hours) == [T0 + HOUR]
        assert rollups.valid_chunks(con, rollups.ROLLUPS["gpu_buckets"], hours) == hours
    finally:
        con.close()


def test_the_rollup_command_rolls_up_a_store_landed_without_rollups(landed: Path) -> None:
    con = open_store(landed)
    try:  # as a store landed before rollups existed
        con.execute("DELETE FROM rollup_chunks")
        for rollup in rollups.ROLLUPS.values():
            con.execute(f"DROP TABLE {rollup.table}")
    finally:
        con.close()
    result = CliRunner().invoke(cli, ["rollup", "--db", str(landed)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["hours"] == 3
    again = CliRunner().invoke(cli, ["rollup", "--db", str(landed)])
    assert json.loads(again.output)["hours"] == 0  # nothing left to do
    con = open_store(landed, read_only=True)
    try:
        assert {hour for _name, hour in _stored(con)} == {0, 1, 2}
    finally:
        con.close()


def test_the_rollup_command_on_a_missing_store_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["rollup", "--db", str(tmp_path / "none.duckdb")])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert result.output.startswith("Error: no database at ")
    assert not (tmp_path / "none.duckdb").exists()


def test_the_rollup_command_rolls_up_each_file_of_a_folder(tmp_path: Path) -> None:
    first, second = _split(Cluster(nodes=4, racks_of=2, scrapes=SCRAPES, gpus=2).build())
    folder = tmp_path / "shards"
    land(folder / "a.duckdb", first)
    land(folder / "b.duckdb", second)
    for path in (folder / "a.duckdb", folder / "b.duckdb"):
        _without_rollups(path)
    result = CliRunner().invoke(cli, ["rollup", "--db", str(folder)])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert [Path(f["db"]).name for f in out["files"]] == ["a.duckdb", "b.duckdb"]
    assert out["hours"] == 6 and all(f["hours"] == 3 for f in out["files"])
    used, _frames = _union_scans([folder])
    assert used == [T0, T0 + HOUR, T0 + 2 * HOUR]


def test_a_rollup_that_fails_loses_nothing_and_leaves_the_hour_to_the_samples(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "fleet.duckdb"
    con = open_store(path)
    con.execute("CREATE TABLE rollup_gpu_hours (chunk_us BIGINT)")  # a table its rows don't fit
    events = Cluster(nodes=3, racks_of=2, scrapes=SCRAPES, gpus=2).build()
    writer = StoreWriter(con)
    result = writer.write_batch(events)
    writer.close()
    assert result.events == len(events)
    assert writer.rollups.failed == 3 and "gpu_hours" in (writer.rollups.last_error or "")
    assert "readers compute it from the samples" in caplog.text  # said once, not per hour
    assert caplog.text.count("rolling up the hour") == 1
    con = open_store(path, read_only=True)
    try:
        assert _stored(con) == {}  # each hour's rollups are one transaction: none kept
        assert int(con.execute("SELECT count(*) FROM gpu_samples").fetchall()[0][0]) > 0
    finally:
        con.close()


def test_the_rollup_command_says_in_one_line_when_rolling_up_fails(landed: Path) -> None:
    con = open_store(landed)
    try:  # a table the rollup's rows do not fit, where no version record says to replace it
        con.execute("DELETE FROM rollup_chunks")
        con.execute("DROP TABLE rollup_gpu_hours")
        con.execute("CREATE TABLE rollup_gpu_hours (chunk_us BIGINT)")
    finally:
        con.close()
    result = CliRunner().invoke(cli, ["rollup", "--db", str(landed)])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert result.output.startswith(f"Error: rolling up {landed} failed (")
    assert "run it again" in result.output


def test_rollups_kept_batch_by_batch_equal_a_rebuild_from_the_samples(tmp_path: Path) -> None:
    """Derived state: what the writer kept as hours closed over many small batches (some hours
    rolled up again after late samples) is what a rebuild from the samples gives."""
    events = Cluster(nodes=4, racks_of=2, scrapes=SCRAPES, gpus=2).build()
    samples = [e for e in events if isinstance(e.payload, c.GpuSampled | c.PortSampled)]
    others = [e for e in events if e not in samples]
    late = samples[::97]  # a few scrapes of every hour arrive after the rest
    path = tmp_path / "fleet.duckdb"
    writer = StoreWriter(open_store(path))
    writer.write_batch(others)
    on_time = [e for e in samples if e not in late]
    for start in range(0, len(on_time), 50):
        writer.write_batch(on_time[start:start + 50])
    writer.write_batch(late)
    writer.close()
    con = open_store(path)
    try:
        kept = {r.name: con.execute(f"SELECT * FROM {r.table} ORDER BY ALL").fetchall()
                for r in rollups.ROLLUPS.values()}
        assert all(kept.values())
        con.execute("DELETE FROM rollup_chunks")
        assert rollups.rebuild(con)["hours"] == 3
        for rollup in rollups.ROLLUPS.values():
            assert con.execute(f"SELECT * FROM {rollup.table} ORDER BY ALL").fetchall() == \
                kept[rollup.name], rollup.name
    finally:
        con.close()
