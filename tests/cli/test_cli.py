"""The CLI surface: help everywhere, JSON by default, one-line errors with documented codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from fleetlog.cli.main import cli
from fleetlog.ingest import store


def _all_commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from _all_commands(command, (*prefix, name))


ALL = list(_all_commands(cli))


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in cli.commands:
        assert name in result.output


@pytest.mark.parametrize("path", [p for p, _ in ALL], ids=[" ".join(p) for p, _ in ALL])
def test_every_command_has_help_with_an_example(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    command = dict(ALL)[path]
    assert command.help and command.help.strip(), f"{' '.join(path)} has no help text"
    assert "Example:" in result.output, f"{' '.join(path)} help has no example"


def test_every_command_is_documented_in_the_readme() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    for path, command in ALL:
        if isinstance(command, click.Group):
            continue
        assert f"fleetlog {' '.join(path)}" in readme, f"README does not mention {path}"


def test_init_creates_a_store_and_reports_json(tmp_path: Path) -> None:
    db = tmp_path / "x.duckdb"
    result = CliRunner().invoke(cli, ["init", "--db", str(db)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["schema_version"] == store.SCHEMA_VERSION
    assert report["views"]["gpu_samples"] == 0
    assert db.exists()


def test_kafka_status_without_a_broker(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["kafka", "status", "--data-dir", str(tmp_path), "--json"])
    assert result.exit_code == 3  # no broker answers (docs/commands.md, exit codes)
    status = json.loads(result.output)
    assert status["running"] is False
    assert status["bootstrap"] is None


def test_kafka_up_on_a_busy_port_is_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(cli, ["kafka", "up", "--data-dir", str(tmp_path), "--port",
                                          str(port)])
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0
    assert f"port {port} on 127.0.0.1 is in use" in result.output
    assert "Traceback" not in result.output


def test_locked_store_exits_3(tmp_path: Path) -> None:
    """Another process holding the write lock (as an ingester does) is exit code 3."""
    import subprocess
    import sys

    db = tmp_path / "locked.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
         "print('ready', flush=True); time.sleep(60)", str(db)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        result = CliRunner().invoke(cli, ["init", "--db", str(db)])
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == 3, result.output
    assert "is locked by another process" in result.output
    assert result.output.strip().count("\n") == 0


@pytest.mark.slow
def test_demo_runs_and_exits_zero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLEETLOG_KAFKA_BOOTSTRAP", raising=False)  # the embedded mode
    result = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path / "demo"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{"):])
    assert summary["transport"] == "embedded"
    assert summary["simulate"]["faults"] == summary["evaluate"]["faults"] > 0
    assert summary["analyze"]["incidents"] > 0
    assert Path(summary["report"]).exists()


@pytest.mark.slow
@pytest.mark.kafka
def test_demo_through_the_real_broker(tmp_path: Path, kafka_bootstrap: str) -> None:
    result = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path / "demo"), "--bootstrap",
                                      kafka_bootstrap, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{"):])
    assert summary["transport"] == "kafka"
    assert summary["ingest"]["events"] == summary["simulate"]["events"]
    assert summary["ingest"]["dead_letters"] == 0
    assert summary["analyze"]["incidents"] > 0
    assert Path(summary["report"]).exists()


def test_the_cli_starts_without_the_heavy_optional_libraries() -> None:
    # scikit-learn (the learned detector, off by default) and matplotlib (report charts) took
    # 1 of the 1.9 s every command spent starting; they are imported where they are used.
    out = subprocess.run(
        [sys.executable, "-c", "import sys, fleetlog.cli.main; "
         "print(sorted(m for m in ('sklearn', 'matplotlib', 'scipy') if m in sys.modules))"],
        check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"
