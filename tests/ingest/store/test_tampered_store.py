"""A store file is data, never code: SQL written into a file (a view reading secret.txt or
/proc/self/environ) never runs in fleetlog, and no connection fleetlog opens on a store it did not
just create can read or write a file (issue #21)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from fleetlog.cli.main import cli
from fleetlog.ingest import contract as c
from fleetlog.ingest import store
from fleetlog.ingest.store.schema import StoreTampered
from fleetlog.ingest.store.writer import land

T0 = 1_767_571_200_000_000  # 2026-01-05T00:00:00Z
SECRET = "hunter2-do-not-print"


def _land(db: Path) -> Path:
    land(db, [
        c.make_event(c.NodeRegistered(node="n1", rack="r1", region="eu", vcluster="vc0",
                                      gpu_count=8, gpu_model="H100", nic_count=8),
                     time_us=T0, source="t"),
        c.make_event(c.XidReported(node="n1", gpu=3, xid=79), time_us=T0 + 1_000_000,
                     source="t"),
    ])
    return db


def _leaking_view(source: str) -> str:
    """An `incidents` view as a forger writes it: fleetlog's columns, a file's text inside."""
    return f"""CREATE OR REPLACE VIEW incidents AS SELECT 'inc-leak' AS incident_id,
        TIMESTAMPTZ '2026-01-05 00:00:00+00' AS start_ts, NULL::TIMESTAMPTZ AS end_ts,
        'gpu_hw' AS category, content AS root_entity, 0.9::DOUBLE AS confidence,
        '[]'::JSON AS candidates, ['e1']::VARCHAR[] AS evidence FROM read_text('{source}')"""


def _tamper(db: Path, *statements: str) -> None:
    con = duckdb.connect(str(db))  # what anyone who can write the file can do
    for statement in statements:
        con.execute(statement)
    con.close()


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "secret.txt"
    path.write_text(SECRET)
    return path


@pytest.fixture
def tampered(tmp_path: Path, secret: Path) -> Path:
    """A store whose `incidents` view reads secret.txt (its views_hash left as fleetlog wrote)."""
    db = _land(tmp_path / "fleet.duckdb")
    _tamper(db, _leaking_view(str(secret)))
    return db


@pytest.fixture(params=["file", "shards"])
def tampered_db(request: pytest.FixtureRequest, tmp_path: Path, secret: Path) -> Path:
    """The --db argument: the tampered file, or a folder of two shards, both tampered."""
    if request.param == "file":
        db = _land(tmp_path / "fleet.duckdb")
        _tamper(db, _leaking_view(str(secret)))
        return db
    folder = tmp_path / "shards"
    for name in ("a", "b"):
        _tamper(_land(folder / f"{name}.duckdb"), _leaking_view(str(secret)))
    return folder


def _everything_written(out: Path) -> str:
    return "".join(p.read_text("utf-8", errors="replace") for p in out.rglob("*") if p.is_file())


def test_incidents_runs_fleetlogs_view_not_the_files(tampered_db: Path) -> None:
    result = CliRunner().invoke(cli, ["incidents", "--db", str(tampered_db)])
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output
    assert json.loads(result.output) == []  # the genuine view: no incident was ever landed


def test_report_runs_fleetlogs_view_not_the_files(tampered_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "reports"
    result = CliRunner().invoke(cli, ["report", "--db", str(tampered_db), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output
    assert SECRET not in _everything_written(out)
    assert "inc-leak" not in _everything_written(out)


def test_sql_runs_fleetlogs_view_not_the_files(tampered_db: Path) -> None:
    result = CliRunner().invoke(cli, ["sql", "--db", str(tampered_db),
                                      "SELECT * FROM incidents"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == []


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux's /proc")
@pytest.mark.parametrize("command", [["incidents"], ["sql", "SELECT * FROM incidents"],
                                     ["report", "--out", "{out}"]])
def test_the_environment_does_not_leak(tmp_path: Path, command: list[str]) -> None:
    """The environment of a real `fleetlog` process (the Kafka SASL password lives there)."""
    db = _land(tmp_path / "fleet.duckdb")
    _tamper(db, _leaking_view("/proc/self/environ"))
    env = {**os.environ, "FLEETLOG_KAFKA_SASL_PASSWORD": SECRET}
    args = [a.format(out=tmp_path / "out") for a in command]
    run = subprocess.run([sys.executable, "-m", "fleetlog", args[0], "--db", str(db), *args[1:]],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert SECRET not in run.stdout + run.stderr
    if (tmp_path / "out").exists():
        assert SECRET not in _everything_written(tmp_path / "out")


@pytest.mark.parametrize("raw", ["incidents_raw", "event_log", "xid_catalog", "rollup_chunks"])
def test_a_raw_table_swapped_for_a_view_is_refused(tmp_path: Path, secret: Path,
                                                   raw: str) -> None:
    db = _land(tmp_path / "fleet.duckdb")
    con = duckdb.connect(str(db))
    columns = ", ".join(f"NULL::{t} AS {n}" if n != "event_id" else "content AS event_id"
                        for n, t in con.execute(
                            "SELECT column_name, data_type FROM duckdb_columns() "
                            "WHERE table_name = ? ORDER BY column_index", [raw]).fetchall())
    con.close()
    _tamper(db, f"DROP TABLE {raw}",
            f"CREATE VIEW {raw} AS SELECT {columns} FROM read_text('{secret}')")
    for args in (["incidents"], ["sql", "SELECT * FROM incidents_raw"], ["init"]):
        result = CliRunner().invoke(cli, [args[0], "--db", str(db), *args[1:]])
        assert result.exit_code == 1, (args, result.output)
        assert SECRET not in result.output
        assert result.output.startswith(f"Error: {db} was changed outside fleetlog: `{raw}` is "
                                        "a view where fleetlog keeps a table")
        assert result.output.count("\n") == 1
    with pytest.raises(StoreTampered):
        store.open_store(db)
    with pytest.raises(StoreTampered):
        store.open_union([db])


def test_a_public_name_taken_by_a_table_is_refused_by_writers(tmp_path: Path) -> None:
    db = _land(tmp_path / "fleet.duckdb")
    _tamper(db, "DROP VIEW incidents", "CREATE TABLE incidents AS SELECT 'fake' AS incident_id")
    with pytest.raises(StoreTampered, match="`incidents` is a table"):
        store.open_store(db)
    reader = store.open_union([db])  # a reader never looks at it: its own view shadows it
    try:
        assert reader.execute("SELECT count(*) FROM incidents").fetchone() == (0,)
    finally:
        reader.close()


def test_a_writer_replaces_a_view_that_is_not_fleetlogs(tampered: Path) -> None:
    """The file's views_hash still says fleetlog's views: the views themselves are compared."""
    con = store.open_store(tampered)
    try:
        assert con.execute("SELECT count(*) FROM incidents").fetchone() == (0,)
        sql = con.execute("SELECT sql FROM duckdb_views() WHERE view_name = 'incidents' "
                          "AND NOT temporary").fetchone()
        assert sql is not None and "read_text" not in sql[0]
        assert "incidents_raw" in sql[0]
    finally:
        con.close()


def _readers(db: Path) -> list[Callable[[], duckdb.DuckDBPyConnection]]:
    return [lambda: store.open_store(db, read_only=True), lambda: store.open_union([db]),
            lambda: store.open_union([db.parent])]


@pytest.mark.parametrize("which", range(3))
def test_readers_have_no_file_access_and_a_locked_configuration(
        tmp_path: Path, secret: Path, which: int) -> None:
    folder = tmp_path / "shards"
    db = _land(folder / "a.duckdb")
    _land(folder / "b.duckdb")
    con = _readers(db)[which]()
    try:
        for statement in (f"SELECT * FROM read_text('{secret}')",
                          f"COPY (SELECT 1) TO '{tmp_path / 'out.csv'}'",
                          f"ATTACH '{tmp_path / 'other.duckdb'}' AS other",
                          "SET enable_external_access = true",
                          "SET temp_directory = '.'",
                          "SET memory_limit = '100GB'"):
            with pytest.raises(duckdb.Error):
                con.execute(statement)
        with pytest.raises(duckdb.Error, match="read-only"):
            con.execute("CREATE TABLE scratch AS SELECT 1")
        assert con.execute("SELECT count(*) FROM xid_events").fetchone() is not None
    finally:
        con.close()
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "other.duckdb").exists()


def test_writers_have_no_file_access(tmp_path: Path, secret: Path) -> None:
    db = _land(tmp_path / "fleet.duckdb")
    con = store.open_store(db)
    try:
        with pytest.raises(duckdb.PermissionException):
            con.execute(f"SELECT * FROM read_text('{secret}')")
        with pytest.raises(duckdb.Error):
            con.execute("SET enable_external_access = true")
    finally:
        con.close()


def test_readers_spill_to_a_private_folder_not_beside_the_store(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """DuckDB lets SQL read and write its temp folder even with file access off: a reader's is
    fresh and private, never `<db>.tmp` or `.tmp` in the current folder."""
    monkeypatch.chdir(tmp_path)
    db = _land(tmp_path / "fleet.duckdb")
    for folder in (tmp_path / "fleet.duckdb.tmp", tmp_path / ".tmp"):
        folder.mkdir()
        (folder / "left.csv").write_text("a\n1\n")
    for con in (store.open_union([db]), store.open_union([db, _land(tmp_path / "b.duckdb")])):
        try:
            row = con.execute("SELECT current_setting('temp_directory')").fetchone()
            assert row is not None
            spill = Path(row[0])
            assert not spill.is_relative_to(tmp_path)
            assert oct(spill.parent.stat().st_mode & 0o777) == oct(0o700)
            for folder in ("fleet.duckdb.tmp", ".tmp"):
                with pytest.raises(duckdb.PermissionException):
                    con.execute(f"SELECT * FROM read_csv('{tmp_path / folder / 'left.csv'}')")
                with pytest.raises(duckdb.PermissionException):
                    con.execute(f"COPY (SELECT 1) TO '{tmp_path / folder / 'out.csv'}'")
        finally:
            con.close()
        assert not (tmp_path / "fleet.duckdb.tmp" / "out.csv").exists()
    no_spill = store.open_union([db], spill=False)
    try:
        assert no_spill.execute("SELECT current_setting('temp_directory')").fetchone() == ("",)
    finally:
        no_spill.close()


def test_the_shard_union_cache_works_without_file_access(tmp_path: Path) -> None:
    """The duplicates cache beside the shards is read and written by fleetlog, not by SQL."""
    event = c.make_event(c.XidReported(node="n1", gpu=3, xid=79), time_us=T0, source="t")
    for name in ("a", "b"):
        land(tmp_path / f"{name}.duckdb", [event])  # one event landed by two shards
    counts = []
    for _ in range(2):  # the first open finds and keeps the duplicates, the second reads them
        con = store.open_union([tmp_path])
        try:
            counts.append(con.execute("SELECT count(*) FROM xid_events").fetchone())
            assert con.execute("SELECT * FROM fleetlog_duplicates").fetchall() == [(event.id, 0)]
        finally:
            con.close()
        assert len(list((tmp_path / ".fleetlog").glob("duplicates-*.parquet"))) == 1
    assert counts == [(1,), (1,)]
