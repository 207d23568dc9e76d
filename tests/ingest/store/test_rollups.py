"""The hourly rollups (ingest/store/rollups.py): kept by the writer as hours close, used only
while exact (same version, same source rows), rolled up again after late samples, rebuilt by
``fleetlog rollup``, never read through a union of shards."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

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


def test_a_union_of_shards_reads_the_samples_not_the_rollups(tmp_path: Path,
                                                              landed: Path) -> None:
    other = tmp_path / "other.duckdb"
    land(other, Cluster(nodes=2, racks_of=2, scrapes=SCRAPES, gpus=2).build())
    con = open_union([landed])
    try:
        assert rollups.location(con) is not None
    finally:
        con.close()
    con = open_union([landed, other])
    try:
        assert rollups.location(con) is None
        assert rollups.valid_chunks(con, rollups.ROLLUPS["port_buckets"], [T0]) == []
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
