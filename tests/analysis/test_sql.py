"""`fleetlog sql`: queries work, and nothing can change the store through it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
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


# Issue #21, item 4: DuckDB lets SQL read and write its temp folder even with file access off.

@pytest.mark.parametrize("shards", [False, True])
def test_the_temp_folder_is_no_way_to_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            shards: bool) -> None:
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "shards"
    for name in ("a", "b"):
        land(folder / f"{name}.duckdb", [c.make_event(c.XidReported(node=name, gpu=0, xid=79),
                                                      time_us=1_000_000, source="t")])
    db = folder if shards else folder / "a.duckdb"
    # DuckDB's own choice: `<file>.tmp` beside one file, `.tmp` in the current folder for a union
    temp = tmp_path / ".tmp" if shards else folder / "a.duckdb.tmp"
    temp.mkdir()
    (temp / "kept.csv").write_text("secret\nhunter2\n")
    runner = CliRunner()
    for statement in (f"COPY (SELECT 1) TO '{temp / 'out.csv'}'",
                      f"SELECT * FROM read_csv('{temp / 'kept.csv'}')",
                      f"SELECT * FROM glob('{temp}/*')"):
        result = runner.invoke(cli, ["sql", "--db", str(db), statement])
        assert result.exit_code == 1, (statement, result.output)
        assert result.output.startswith("Error: SQL error: Permission Error"), result.output
        assert "hunter2" not in result.output
    assert not (temp / "out.csv").exists()
    # Regardless of path: DuckDB has no temp folder of its own here to allow.
    result = runner.invoke(cli, ["sql", "--db", str(db),
                                 "SELECT current_setting('temp_directory') AS t"])
    assert json.loads(result.output) == [{"t": ""}]


# Issue #21, item 9: what `fleetlog sql` prints.

def test_columns_with_one_name_are_all_kept(store: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["sql", "--db", str(store), "SELECT 1 AS a, 2 AS a"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [{"a": 1, "a_2": 2}]
    result = runner.invoke(cli, ["sql", "--db", str(store), "--csv",
                                 "SELECT 1 AS a, 2 AS a, 3 AS a_2, 4 AS a"])
    assert result.output.splitlines() == ["a,a_3,a_2,a_4", "1,2,3,4"]


def test_unique_columns() -> None:
    from fleetlog.analysis.sql import unique_columns

    assert unique_columns(["a", "b"]) == ["a", "b"]
    assert unique_columns(["a", "a", "a"]) == ["a", "a_2", "a_3"]
    assert unique_columns(["a", "a", "a_2"]) == ["a", "a_3", "a_2"]


def _strict_json(text: str) -> object:
    def refuse(constant: str) -> object:
        raise ValueError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


def test_json_has_no_nan_or_infinity(store: Path) -> None:
    query = ("SELECT 'nan'::DOUBLE AS n, 'inf'::DOUBLE AS i, '-inf'::DOUBLE AS m, 1.5 AS x, "
             "[1.0, 'nan'::DOUBLE] AS l, {'f': 'inf'::FLOAT} AS s")
    runner = CliRunner()
    result = runner.invoke(cli, ["sql", "--db", str(store), query])
    assert result.exit_code == 0, result.output
    assert _strict_json(result.output) == [
        {"n": None, "i": None, "m": None, "x": 1.5, "l": [1.0, None], "s": {"f": None}}]
    result = runner.invoke(cli, ["sql", "--db", str(store), "--nl", query])
    assert _strict_json(result.output)
    result = runner.invoke(cli, ["sql", "--db", str(store), "--csv", query])
    assert result.output.splitlines()[1].startswith("nan,inf,-inf,1.5")


def test_a_query_past_its_timeout_is_stopped(store: Path) -> None:
    started = time.monotonic()
    result = CliRunner().invoke(cli, [
        "sql", "--db", str(store), "--timeout", "0.5",
        "SELECT sum(a.range * b.range) AS s FROM range(200000) a, range(200000) b"])
    assert time.monotonic() - started < 30
    assert result.exit_code == 1, result.output
    assert result.output == ("Error: the query ran longer than its time limit of 0.5 s "
                             "(--timeout) and was stopped\n")


def test_a_query_past_its_memory_limit_fails_clearly(store: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, [
        "sql", "--db", str(store), "--memory-limit", "32MB",
        "SELECT count(DISTINCT range::VARCHAR || 'x') AS n FROM range(8000000)"])
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: SQL error: Out of Memory Error")
    assert "memory limit of 32MB (--memory-limit)" in result.output
    assert result.output.count("\n") == 1
    result = runner.invoke(cli, ["sql", "--db", str(store), "SET memory_limit = '100GB'"])
    assert result.exit_code == 1 and "locked" in result.output
    result = runner.invoke(cli, ["sql", "--db", str(store), "--memory-limit", "lots", "SELECT 1"])
    assert result.exit_code == 2 and "not a size" in result.output


def test_a_table_shows_at_most_max_rows_and_says_how_many_were_cut(store: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["sql", "--db", str(store), "--table",
                                 "SELECT range AS r FROM range(1500)"])
    assert result.exit_code == 0, result.output
    assert "│ 999 │" in result.stdout and "│ 1000 │" not in result.stdout
    assert result.stderr == "500 more rows not shown (--max-rows 1000; --max-rows 0 shows all)\n"
    result = runner.invoke(cli, ["sql", "--db", str(store), "--max-rows", "2",
                                 "SELECT range AS r FROM range(5)"])
    assert json.loads(result.stdout) == [{"r": 0}, {"r": 1}]
    assert result.stderr.startswith("3 more rows not shown")
    result = runner.invoke(cli, ["sql", "--db", str(store), "SELECT range AS r FROM range(1500)"])
    assert len(json.loads(result.stdout)) == 1500 and not result.stderr  # JSON: all by default
    result = runner.invoke(cli, ["sql", "--db", str(store), "--table", "--max-rows", "0",
                                 "SELECT range AS r FROM range(1500)"])
    assert "│ 1499 │" in result.stdout and not result.stderr


def test_the_last_query_at_the_prompt_runs_without_its_semicolon(store: Path) -> None:
    result = CliRunner().invoke(cli, ["sql", "--db", str(store), "--json"],
                                input="SELECT 1 AS first;\nSELECT 42 AS answer\n")
    assert result.exit_code == 0, result.output
    assert '"first": 1' in result.stdout and '"answer": 42' in result.stdout


def test_ctrl_c_at_the_prompt_exits_130(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(prompt: str = "") -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr("builtins.input", interrupted)
    result = CliRunner().invoke(cli, ["sql", "--db", str(store)])
    assert result.exit_code == 130, result.output
    assert result.stderr.endswith("Interrupted.\n")
    assert "Traceback" not in result.output and "Aborted" not in result.output


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT")
def test_ctrl_c_during_a_query_exits_130(store: Path) -> None:
    """A real Ctrl-C (SIGINT) while DuckDB runs a query typed at the prompt."""
    process = subprocess.Popen(
        [sys.executable, "-m", "fleetlog", "sql", "--db", str(store)], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # As at a terminal: a suite started in the background of a script inherits SIGINT
        # ignored (POSIX shells ignore it for background jobs), and so would the prompt.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert process.stdin is not None and process.stderr is not None
    assert process.stderr.readline().startswith("fleetlog sql (read-only)")  # at the prompt
    process.stdin.write("SELECT sum(a.range * b.range) FROM range(300000) a, range(300000) b;\n")
    process.stdin.flush()
    time.sleep(1.0)
    started = time.monotonic()
    process.send_signal(signal.SIGINT)
    _out, err = process.communicate(timeout=60)
    assert time.monotonic() - started < 10
    assert process.returncode == 130, err
    assert err.strip().endswith("Interrupted.")
    assert "Traceback" not in err and "Aborted" not in err


def test_a_huge_cut_is_counted_up_to_a_cap(store: Path) -> None:
    result = run_query([store], "SELECT range FROM range(5000000)", max_rows=10)
    assert len(result.rows) == 10
    assert not result.cut_exact and 1_000_000 <= result.cut < 1_100_000
    result = run_query([store], "SELECT range FROM range(5000)", max_rows=10)
    assert (result.cut, result.cut_exact) == (4990, True)
    out = CliRunner().invoke(cli, ["sql", "--db", str(store), "--max-rows", "1",
                                   "SELECT range FROM range(5000000)"])
    assert out.stderr.startswith("at least ")


def test_the_prompt_goes_on_after_a_huge_cut(store: Path) -> None:
    result = CliRunner().invoke(cli, ["sql", "--db", str(store), "--max-rows", "1"],
                                input="SELECT range FROM range(5000000);\nSELECT 7 AS seven;\n")
    assert result.exit_code == 0, result.output
    assert "at least " in result.stderr and "│ 7 " in result.stdout


# Issue #22: the prompt's dot commands, and the last query without its ';'.

def test_dot_tables_lists_the_views_and_the_raw_tables(store: Path) -> None:
    result = CliRunner().invoke(cli, ["sql", "--db", str(store), "--csv"], input=".tables\n")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "name,kind"
    assert {"xid_events,view", "incidents,view", "xid_raw,table", "event_log,table",
            "xid_catalog,table"} <= set(lines)
    names = [line.split(",")[0] for line in lines[1:]]
    assert names == sorted(names)


def test_dot_schema_shows_the_columns_of_a_view_or_a_table(store: Path) -> None:
    result = CliRunner().invoke(cli, ["sql", "--db", str(store), "--csv"],
                                input=".schema XID_EVENTS\n.schema xid_raw;\n.schema nope\n"
                                "SELECT 1 AS still_here;\n")
    assert result.exit_code == 0, result.output
    out = result.stdout
    view = out[:out.index("column,type", 1)]
    assert view.splitlines()[:4] == ["column,type", "ts,TIMESTAMP WITH TIME ZONE",
                                     "node,VARCHAR", "gpu,INTEGER"]
    assert "action,VARCHAR" in view  # the view's, from the catalog join
    table = out[out.index("column,type", 1):]
    assert table.splitlines()[:2] == ["column,type", "event_id,VARCHAR"]
    assert "action,VARCHAR" not in table
    assert "Error: no table or view named 'nope' (.tables lists them)\n" in result.stderr
    assert out.endswith("still_here\n1\n")  # the prompt went on after the mistake
    result = CliRunner().invoke(cli, ["sql", "--db", str(store), "--csv"], input=".schema\n")
    assert result.stdout.splitlines()[0] == "name,column,type"
    assert "xid_events,xid,INTEGER" in result.stdout and "nodes,node,VARCHAR" in result.stdout


def test_dot_help_and_an_unknown_dot_command(store: Path) -> None:
    result = CliRunner().invoke(cli, ["sql", "--db", str(store)],
                                input=".help\n.tabels\n.quit\nSELECT 'not run';\n")
    assert result.exit_code == 0, result.output
    for command in (".tables", ".schema NAME", ".help", ".quit"):
        assert any(line.startswith(command) for line in result.stdout.splitlines()), command
    assert "Error: unknown command .tabels (.help lists them)\n" in result.stderr
    assert "not run" not in result.stdout  # .quit left before it


def test_a_dot_command_as_the_query(store: Path) -> None:
    result = CliRunner().invoke(cli, ["sql", "--db", str(store), ".schema xid_catalog"])
    assert result.exit_code == 0, result.output
    assert {"column": "xid", "type": "INTEGER"} in json.loads(result.stdout)
    result = CliRunner().invoke(cli, ["sql", "--db", str(store), ".nope"])
    assert result.exit_code == 1
    assert result.stderr == "Error: unknown command .nope (.help lists them)\n"


@pytest.mark.slow  # a fresh interpreter: ~5 s on a loaded 2-core machine
def test_piped_input_gets_results_only_and_its_last_query_runs(store: Path) -> None:
    """A real pipe, as `fleetlog sql --db x < queries.sql`: no prompts on stdout."""
    process = subprocess.run(
        [sys.executable, "-m", "fleetlog", "sql", "--db", str(store), "--csv"],
        input="SELECT 1 AS first;\n.schema racks\nSELECT 42\n  AS answer", capture_output=True,
        text=True, timeout=120, check=False)
    assert process.returncode == 0, process.stderr
    assert process.stdout.splitlines() == [
        "first", "1", "column,type", "rack,VARCHAR", "region,VARCHAR", "pdu,VARCHAR",
        "cooling_zone,VARCHAR", "answer", "42"]


@pytest.mark.slow  # a fresh interpreter: ~6 s on a loaded 2-core machine
@pytest.mark.skipif(sys.platform == "win32", reason="a pseudo-terminal")
def test_at_a_terminal_ctrl_d_runs_the_last_query(store: Path) -> None:
    """Interactive: at a terminal (a pseudo-terminal) the prompts show; typed as a person would,
    each line after its prompt, and Ctrl-D ends the input and runs the query without its ';'."""
    import os
    import pty
    import select

    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "fleetlog", "sql", "--db", str(store), "--csv"],
        stdin=follower, stdout=follower, stderr=follower, close_fds=True)
    os.close(follower)
    seen = b""

    def read_until(marker: bytes) -> bytes:
        """What the terminal showed up to ``marker``; the wait is bounded only so that a broken
        prompt fails the test instead of hanging it."""
        nonlocal seen
        while marker not in seen:
            ready, _, _ = select.select([leader], [], [], 120)
            assert ready, f"no {marker!r} on the terminal; it shows {seen!r}"
            seen += os.read(leader, 4096)
        before, _, seen = seen.partition(marker)
        return before

    try:
        read_until(b"fleetlog> ")
        os.write(leader, b".tables\n")
        tables = read_until(b"fleetlog> ")
        os.write(leader, b"SELECT 6 * 7\n")
        read_until(b"...> ")
        os.write(leader, b"  AS answer\n")
        read_until(b"...> ")
        os.write(leader, b"\x04")  # Ctrl-D
        read_until(b"answer")
        answer = read_until(b"42")
        assert process.wait(timeout=120) == 0
    finally:
        process.kill()
        os.close(leader)
    assert b"xid_events,view" in tables
    assert answer.strip() == b""  # the query's result: its column, then its value
