"""Hostile input at the command line (issue #21): Ctrl-C exits 130 from every command, a bad
option value is a one-line usage error (exit 2) everywhere, files are never written through a
symbolic link planted at their predictable names."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from fleetlog.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]


def _fleetlog(*args: str, stdin: int | None = subprocess.DEVNULL) -> subprocess.Popen[str]:
    """``python -m fleetlog ARGS`` with SIGINT at its default (a shell's background job, or a
    test runner, may have it ignored, and a child inherits that)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "fleetlog", *args], cwd=ROOT, env=env, stdin=stdin,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _interrupt(process: subprocess.Popen[str], ready: Callable[[], bool],
               timeout: float = 60.0) -> tuple[int, str]:
    """SIGINT once the command is running (``ready``); its exit code and stderr."""
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None:
            raise AssertionError(f"ended before it was interrupted: {process.communicate()}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("never got ready")
        time.sleep(0.1)
    time.sleep(0.5)  # well inside the command's work
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    return process.returncode, err


def _check_interrupted(code: int, err: str) -> None:
    assert code == 130, err
    assert err.strip().splitlines()[-1] == "Interrupted."
    assert "Aborted!" not in err and "Traceback" not in err


def test_sigint_in_simulate_exits_130(tmp_path: Path) -> None:
    out = tmp_path / "jsonl"
    process = _fleetlog("simulate", "--nodes", "4", "--duration", "10h", "--speed", "1", "--to",
                        f"jsonl:{out}")
    _check_interrupted(*_interrupt(process, lambda: out.is_dir() and any(out.iterdir())))


def test_sigint_in_replay_exits_130(tmp_path: Path) -> None:
    source, target = tmp_path / "fleet.duckdb", tmp_path / "copy.duckdb"
    made = CliRunner().invoke(cli, ["simulate", "--nodes", "4", "--duration", "1h", "--to",
                                    f"duckdb:{source}"])
    assert made.exit_code == 0, made.output
    process = _fleetlog("replay", "--db", str(source), "--speed", "1", "--to",
                        f"duckdb:{target}")
    _check_interrupted(*_interrupt(process, target.exists))


def test_sigint_in_import_exits_130(tmp_path: Path) -> None:
    """import waits on a pipe nobody writes to; Ctrl-C ends it."""
    process = _fleetlog("import", "--format", "jsonl", "--to", f"duckdb:{tmp_path / 'i.duckdb'}",
                        "/dev/stdin", stdin=subprocess.PIPE)

    def reading() -> bool:  # blocked reading the pipe: the command itself is running
        return "pipe" in Path(f"/proc/{process.pid}/wchan").read_text()

    try:
        _check_interrupted(*_interrupt(process, reading))
    finally:
        if process.stdin:
            process.stdin.close()


@pytest.mark.kafka
def test_sigint_in_analyze_follow_exits_130(tmp_path: Path, kafka_bootstrap: str,
                                            unique_name) -> None:
    db = tmp_path / "follow.duckdb"
    process = _fleetlog("analyze", "--follow", "--db", str(db), "--bootstrap", kafka_bootstrap,
                        "--topic-prefix", unique_name("sigint"))
    _check_interrupted(*_interrupt(process, db.exists))


BAD_VALUES = [
    ("simulate", "--speed", "-1"), ("simulate", "--speed", "nan"), ("simulate", "--speed", "inf"),
    ("simulate", "--nodes", "0"), ("simulate", "--duration", "nan"), ("simulate", "--duration",
                                                                      "inf"),
    ("simulate", "--duration", "3000000h"), ("simulate", "--fault-rate", "-1"),
    ("simulate", "--fault-rate", "nan"), ("simulate", "--base-hazard", "-1"),
    ("simulate", "--gpus-per-node", "0"), ("simulate", "--nodes-per-rack", "0"),
    ("simulate", "--racks-per-su", "0"), ("simulate", "--spines", "0"),
    ("simulate", "--regions", "0"), ("simulate", "--vclusters", "0"),
    ("simulate", "--seed", "-1"), ("simulate", "--interval", "nan"),
    ("simulate", "--interval", "inf"), ("simulate", "--interval", "0.5"),
    ("simulate", "--restart-overhead", "inf"), ("simulate", "--start", "9999-01-01T00:00:00Z"),
    ("replay", "--speed", "-1"), ("replay", "--speed", "nan"), ("replay", "--speed", "inf"),
    ("replay", "--since", "1900-01-01T00:00:00Z"),
    ("ingest", "--until-idle", "nan"), ("ingest", "--broker-timeout", "inf"),
    ("ingest", "--session-timeout", "inf"), ("ingest", "--session-timeout", "100000"),
    ("ingest", "--snapshot-every", "nan"), ("ingest", "--topics", "nosuchfamily"),
    ("analyze", "--every", "nan"), ("analyze", "--lookback", "inf"),
    ("analyze", "--max-time", "1e400"), ("report", "--window", "100000000h"),
]
_REQUIRED = {
    "simulate": ["--to", "null:"], "replay": ["--db", "x.duckdb", "--to", "duckdb:y.duckdb"],
    "ingest": ["--db", "x.duckdb", "--bootstrap", "127.0.0.1:9"], "analyze": ["--db", "x.duckdb"],
    "report": ["--db", "x.duckdb", "--out", "r"],
}


@pytest.mark.parametrize("args", BAD_VALUES, ids=" ".join)
def test_a_bad_option_value_is_a_one_line_usage_error(tmp_path: Path, args: tuple[str, ...],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    command, *rest = args
    result = CliRunner().invoke(cli, [command, *_REQUIRED[command], *rest])
    assert result.exit_code == 2, result.output
    error = result.output.strip().splitlines()[-1]
    assert error.startswith("Error: Invalid value for"), result.output
    assert not list(tmp_path.iterdir()), "a refused command left files behind"


def test_unknown_topic_family_lists_the_valid_ones(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["ingest", "--db", str(tmp_path / "x.duckdb"),
                                      "--bootstrap", "127.0.0.1:9", "--topics",
                                      "gpu,nosuchfamily"])
    assert result.exit_code == 2
    assert ("'nosuchfamily' is not a fleetlog topic family: use inventory, gpu, net, host, jobs, "
            "truth, analysis, dlq (or fleetlog.<family>)") in result.output


def test_topic_families_and_their_topics_are_accepted() -> None:
    from fleetlog.cli.ingest_cmd import _topics

    assert _topics(("gpu,p.jobs", "gpu"), "p") == ["p.gpu", "p.jobs"]
    assert _topics((), "p") == [f"p.{f}" for f in ("inventory", "gpu", "net", "host", "jobs",
                                                    "truth", "analysis")]


def test_simulate_never_appends_through_a_planted_symlink(tmp_path: Path) -> None:
    out = tmp_path / "jsonl"
    out.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (out / "inventory.jsonl").symlink_to(victim)
    result = CliRunner().invoke(cli, ["simulate", "--nodes", "4", "--duration", "0.01h", "--to",
                                      f"jsonl:{out}"])
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines()[-1] == (
        f"Error: {out / 'inventory.jsonl'} is a symbolic link: remove it (jsonl: files are "
        "appended to only as regular files)")
    assert victim.read_text() == "precious\n"
    (out / "inventory.jsonl").unlink()
    os.mkfifo(out / "inventory.jsonl")
    result = CliRunner().invoke(cli, ["simulate", "--nodes", "4", "--duration", "0.01h", "--to",
                                      f"jsonl:{out}"])
    assert result.exit_code == 1 and "is not a regular file" in result.output
