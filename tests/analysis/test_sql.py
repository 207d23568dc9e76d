"""`fleetlog sql`: queries work, and nothing can change the store through it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from fleetlog.analysis.sql import QueryError, run_query
from fleetlog.cli.main import cli
from fleetlog.ingest import contract as c
from fleetlog.ingest.store.writer import land


@pytest.fixture
def store(tmp_path: Path) -> Path:
    db = tmp_path / "fleet.duckdb"
    land(db, [
        c.make_event(c.XidReported(node="n1", gpu=3, xid=79), time_us=1_000_000, source="t"),
        c.make_event(c.XidReported(node="n2", gpu=0, xid=48), time_us=2_000_000, source="t"),
    ])
    return db


def test_query_as_json_and_csv(store: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["sql", "--db", str(store),
                                 "SELECT node, xid, action FROM xid_events ORDER BY xid"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [
        {"node": "n2", "xid": 48, "action": "WORKFLOW_XID_48"},
        {"node": "n1", "xid": 79, "action": "RESTART_BM"},
    ]
    result = runner.invoke(cli, ["sql", "--db", str(store), "--csv",
                                 "SELECT xid FROM xid_events ORDER BY xid"])
    assert result.output.splitlines() == ["xid", "48", "79"]


@pytest.mark.parametrize("statement", [
    "DELETE FROM xid_raw",
    "INSERT INTO xid_raw SELECT * FROM xid_raw",
    "DROP TABLE xid_raw",
    "CREATE TABLE x AS SELECT 1",
    "UPDATE xid_catalog SET action = 'IGNORE'",
    "COPY xid_raw TO '/tmp/fleetlog-exfil.csv'",
    "ATTACH '{db}' AS rw; INSERT INTO rw.xid_raw SELECT * FROM rw.xid_raw",
    "ATTACH '{db}.other' AS other",
    "SET enable_external_access = true",
])
def test_nothing_can_change_the_store(store: Path, statement: str) -> None:
    before = run_query([store], "SELECT * FROM xid_raw ORDER BY event_id").rows
    result = CliRunner().invoke(cli, ["sql", "--db", str(store), statement.format(db=store)])
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: SQL error:")
    assert run_query([store], "SELECT * FROM xid_raw ORDER BY event_id").rows == before
    assert run_query([store], "SELECT count(*) FROM xid_catalog").rows[0][0] > 150


def test_a_bad_query_is_one_line(store: Path) -> None:
    with pytest.raises(QueryError, match="SQL error"):
        run_query([store], "SELECT nope FROM xid_events")
    result = CliRunner().invoke(cli, ["sql", "--db", str(store), "SELEC 1"])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1


def test_missing_store(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["sql", "--db", str(tmp_path / "nope.duckdb"), "SELECT 1"])
    assert result.exit_code == 1
    assert "run `fleetlog ingest` or `fleetlog demo` first" in result.output


def test_prompt_reads_queries_until_eof(store: Path) -> None:
    result = CliRunner().invoke(cli, ["sql", "--db", str(store), "--json"],
                                input="SELECT count(*) AS n\nFROM xid_events;\n")
    assert result.exit_code == 0, result.output
    assert '"n": 2' in result.output
