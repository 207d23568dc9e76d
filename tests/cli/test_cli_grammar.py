"""One CLI grammar (issue #22), the output and exit-code half: help that states each command's
real default output, tables that never cut a value, nested values as sub-tables, CSV as rows,
exit codes scripts can test, one-line errors that end their line, and an import that says when
no format reads a file."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from fleetlog.cli.main import cli
from fleetlog.cli.output import render
from fleetlog.ingest.kafka import broker

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
FLAGS = ("--json", "--table", "--csv", "--nl")


def _run(*args: str | Path, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli, [str(a) for a in args], env=env)


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += _commands(command, (*prefix, name))
        elif any(f"--{fmt}" in p.opts for p in command.params for fmt in ("json", "table")):
            found.append((*prefix, name))
    return found


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small simulated cluster with GPU faults, analysed: incidents to list and explain."""
    db = tmp_path_factory.mktemp("grammar") / "fleet.duckdb"
    result = _run("simulate", "--nodes", "8", "--hours", "1", "--seed", "4", "--scenario",
                  "gpu_hw", "--to", f"duckdb:{db}")
    assert result.exit_code == 0, result.output
    result = _run("analyze", "--db", db)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["incidents"] > 0
    return db


# 1. Help that tells the truth


@pytest.mark.parametrize("path", _commands(cli), ids=" ".join)
def test_help_names_one_default_output_or_says_when_it_depends(path: tuple[str, ...]) -> None:
    """Exactly one output flag is "(the default)"; or, where the default depends on how the
    command runs (sql: a QUERY or the prompt), each default says when it applies."""
    text = _run(*path, "--help").output
    flags = " ".join(text[text.index("  --json "):].split())  # the output flags' help, unwrapped
    plain = flags.count("(the default)") + flags.count("(the default;")
    qualified = len(re.findall(r"\(the default (?:for|at|when) ", flags))
    assert (plain, qualified) in ((1, 0), (0, 2)), f"{' '.join(path)}: {flags}"


def test_each_default_is_what_the_command_prints(store: Path, tmp_path: Path) -> None:
    """The help's default is the output: JSON for init, one object per line for scenarios,
    words for explain (its --json the structure), a table for ingest."""
    assert "Output JSON (the default)." in " ".join(_run("init", "--help").output.split())
    assert json.loads(_run("init", "--db", store).output)["schema_version"] > 0
    assert "per line (the default)." in " ".join(_run("scenarios", "--help").output.split())
    lines = _run("scenarios").output.strip().splitlines()
    assert len(lines) > 1 and all("scenario" in json.loads(line) for line in lines)

    assert "in words, for people (the default)." in " ".join(
        _run("explain", "--help").output.split())
    incident = json.loads(_run("incidents", "--db", store).output)[0]["incident_id"]
    words = _run("explain", "--db", store, incident)
    assert words.exit_code == 0 and incident in words.output
    with pytest.raises(ValueError):
        json.loads(words.output)
    assert json.loads(_run("explain", "--db", store, incident, "--json").output)

    assert "a table for people (the default)." in " ".join(_run("ingest", "--help").output.split())
    folder = tmp_path / "jsonl"
    made = _run("simulate", "--nodes", "2", "--hours", "0.05", "--to", f"jsonl:{folder}")
    assert made.exit_code == 0, made.output
    landed = _run("ingest", "--from", f"jsonl:{folder}", "--db", tmp_path / "in.duckdb")
    assert landed.exit_code == 0, landed.output
    assert landed.output.lstrip().startswith(("┏", "┌")) and "events" in landed.output


# 2. Tables that never cut a value; nested values readable; CSV as rows; a time as a time


def test_a_narrow_table_keeps_every_identifier_and_path_whole(store: Path, tmp_path: Path) -> None:
    narrow = {"COLUMNS": "40"}
    ids = [row["incident_id"] for row in json.loads(_run("incidents", "--db", store).output)]
    table = _run("incidents", "--db", store, "--table", env=narrow).output
    assert "…" not in table
    for incident_id in ids:  # whole, on one line: what `fleetlog explain` needs
        assert any(incident_id in line for line in table.splitlines()), incident_id
    out = tmp_path / "a-report-folder-with-a-long-name" / "and-another-level-below-it"
    files = json.loads(_run("report", "--db", store, "--out", out).output)["files"]
    report = _run("report", "--db", store, "--out", out, "--table", env=narrow).output
    assert files and "…" not in report
    for path in files:
        assert any(path in line for line in report.splitlines()), path


def test_prose_wraps_between_words_and_is_never_cut(capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "60")
    words = "the GPU fell off the bus after repeated double-bit ECC errors on its HBM stack"
    render([{"incident_id": "inc-aca11c407a5f3e21", "why": words}], "table")
    table = capsys.readouterr().out
    assert "…" not in table
    assert max(len(line) for line in table.splitlines()) <= 60  # it fits: the prose wrapped
    cells = [line.split("│")[2].strip() for line in table.splitlines() if line.startswith("│")]
    assert " ".join(cells) == words


def test_nested_values_are_sub_tables_not_json(store: Path) -> None:
    table = _run("init", "--db", store, "--table").output
    assert "{" not in table and '"' not in table
    views = json.loads(_run("init", "--db", store).output)["views"]
    for view, rows in views.items():  # a line each: the view and its count, side by side
        assert re.search(rf"\b{view}\s+{rows}\b", table), view


def test_state_csv_is_a_row_per_node_job_and_incident(store: Path) -> None:
    at = "2026-01-05T00:59:00Z"
    state = json.loads(_run("state", "--db", store, "--at", at).output)
    result = _run("state", "--db", store, "--at", at, "--csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.output)))
    sections = [row["section"] for row in rows]
    assert sections.count("node") == len(state["nodes_not_up"])
    assert sections.count("job") == len(state["job_list"]) > 0
    assert sections.count("incident") == len(state["open_incidents"])
    assert not any(value.startswith(("{", "[")) for row in rows for value in row.values())
    jobs = {row["job"]: row for row in rows if row["section"] == "job"}
    assert {job["job"]: str(job["gpus"]) for job in state["job_list"]} == {
        name: row["gpus"] for name, row in jobs.items()}
    lines = _run("state", "--db", store, "--at", at, "--nl").output.splitlines()
    assert [json.loads(line)["section"] for line in lines] == sections


# 3. Exit codes scripts can trust; error messages that end their line


def test_kafka_status_exits_3_when_no_broker_runs(tmp_path: Path) -> None:
    result = _run("kafka", "status", "--data-dir", tmp_path)
    assert result.exit_code == 3
    assert json.loads(result.stdout)["answering"] is False  # the status, printed all the same


@pytest.mark.slow
@pytest.mark.kafka
def test_kafka_status_exits_0_only_while_the_broker_answers(tmp_path: Path) -> None:
    data = tmp_path / "kafka"
    up = _run("kafka", "up", "--data-dir", data, "--port", str(broker.free_port()),
              "--controller-port", str(broker.free_port()))
    try:
        assert up.exit_code == 0, up.output
        status = _run("kafka", "status", "--data-dir", data)
        assert status.exit_code == 0, status.output
        started = datetime.fromisoformat(json.loads(status.stdout)["started_at"])
        assert started.tzinfo is not None  # a time, not Unix seconds
        table = _run("kafka", "status", "--data-dir", data, "--table").output
        assert started.isoformat(timespec="seconds") in table and "e+09" not in table
    finally:
        assert _run("kafka", "down", "--data-dir", data).exit_code == 0
    assert _run("kafka", "status", "--data-dir", data).exit_code == 3


def test_scrape_fails_when_no_poll_succeeded(tmp_path: Path) -> None:
    port = broker.free_port()  # nothing listens there: every poll is refused
    result = _run("scrape", "--dcgm", f"http://127.0.0.1:{port}/metrics", "--interval",
                  "10ms", "--count", "2", "--to", f"duckdb:{tmp_path / 'x.duckdb'}")
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert (summary["polls"], summary["ok_polls"], summary["failed_polls"]) == (2, 0, 2)
    assert result.stderr.startswith("Error: no poll succeeded (2 polls); the last error: ")
    assert result.stderr.count("\n") == 1 and result.stderr.endswith("\n")


def test_state_before_the_first_event_is_a_one_line_error(store: Path) -> None:
    result = _run("state", "--db", store, "--at", "2025-12-31T00:00:00Z")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == ("Error: --at 2025-12-31T00:00:00+00:00 is before the first event "
                             "(2026-01-05T00:00:00+00:00): ask for a time from then on\n")


def test_two_errors_in_a_row_are_two_lines(tmp_path: Path) -> None:
    from fleetlog.cli.errors import CommandFailed

    shown = io.StringIO()
    CommandFailed("the first failure\n").show(shown)
    CommandFailed("a second\none, over two lines").show(shown)
    assert shown.getvalue() == "Error: the first failure\nError: a second one, over two lines\n"
    missing = [_run("state", "--db", tmp_path / f"no-{i}.duckdb", "--at", "2026-01-05T00:00:00Z")
               for i in range(2)]
    assert all(r.exit_code == 1 and r.stderr.endswith("\n") for r in missing)
    assert (missing[0].stderr + missing[1].stderr).count("Error: ") == 2
    assert len((missing[0].stderr + missing[1].stderr).splitlines()) == 2


# 4. import of a file no format reads


@pytest.mark.parametrize("name", ["sample-sinfo-output.txt", "sample-squeue-output.txt"])
def test_import_says_no_format_reads_sinfo_or_squeue(tmp_path: Path, name: str) -> None:
    path = DATA / "slurm" / name
    result = _run("import", "--to", f"duckdb:{tmp_path / 'x.duckdb'}", path)
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {path} is in none of the formats fleetlog reads: none of dcgm, nvidia-smi-csv, "
        "nvidia-smi-xml, kmsg, sacct, perfquery, sysfs-ib, jsonl recognised it (a sacct or "
        "nvidia-smi CSV without its header line is read with --format and --fields)\n")
    assert "pass --format" not in result.stderr


def test_import_names_the_format_that_reads_what_it_could_not_tell(tmp_path: Path) -> None:
    """A header-less sacct file with its --fields but no --format: sacct reads it, so that is
    what the message says (and with --format sacct it lands)."""
    path = tmp_path / "sacct-noheader.txt"
    path.write_text("9|FAILED|2025-01-01T00:00:00|2025-01-01T00:01:00\n")
    fields = ("--fields", "JobID,State,Start,End", "--tz", "UTC")
    result = _run("import", "--to", f"duckdb:{tmp_path / 'x.duckdb'}", *fields, path)
    assert result.exit_code == 1
    assert result.stderr == (f"Error: cannot tell the format of {path} from its content: "
                             "--format sacct reads events from it\n")
    landed = _run("import", "--to", f"duckdb:{tmp_path / 'x.duckdb'}", *fields,
                  "--format", "sacct", path)
    assert landed.exit_code == 0, landed.output
    assert json.loads(landed.stdout)["events_read"] == 2
