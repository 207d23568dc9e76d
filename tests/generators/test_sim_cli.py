"""``fleetlog simulate`` and ``fleetlog scenarios`` from the command line."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from click.testing import CliRunner

from fleetlog.cli.main import cli
from fleetlog.generators.faults import SCENARIOS


def _run(*args: str):
    return CliRunner().invoke(cli, list(args))


def _folder_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()


def test_simulate_to_jsonl_prints_a_json_summary(tmp_path: Path) -> None:
    out = tmp_path / "a"
    result = _run("simulate", "--nodes", "8", "--duration", "0.25h", "--seed", "4", "--scenario",
                  "host_hw", "--to", f"jsonl:{out}", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    for key in ("events", "gpu_samples", "faults", "gpu_samples_per_s"):
        assert key in summary
    assert summary["faults"] == 1 and summary["gpu_samples"] > 0
    # the same command again into another folder: byte-identical files
    again = tmp_path / "b"
    result = _run("simulate", "--nodes", "8", "--duration", "0.25h", "--seed", "4", "--scenario",
                  "host_hw", "--to", f"jsonl:{again}", "--json")
    assert result.exit_code == 0
    assert _folder_digest(out) == _folder_digest(again)


def test_scenarios_lists_one_line_each() -> None:
    result = _run("scenarios")
    assert result.exit_code == 0
    lines = result.output.strip().splitlines()
    assert [json.loads(line)["scenario"] for line in lines] == list(SCENARIOS)


def test_bad_input_is_a_one_line_error(tmp_path: Path) -> None:
    result = _run("simulate", "--to", "s3://x")
    assert result.exit_code == 2 and "kafka://HOST:PORT" in result.output
    result = _run("simulate", "--to", "null:", "--scenario", "nope")
    assert result.exit_code == 2
    result = _run("simulate", "--to", "null:", "--nodes", "0")  # a bad value: usage, exit 2
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        "Error: Invalid value for '--nodes': 0 is not in the range x>=1.")
    result = _run("simulate", "--to", "null:", "--nodes", "8", "--vclusters", "5")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.count("\n") == 1


def test_unreachable_broker_is_a_one_line_error(monkeypatch) -> None:
    """The publisher's own error (after kafka-python's 30 s bootstrap wait, faked here)."""
    from fleetlog.generators import sinks
    from fleetlog.ingest.kafka.producer import PublishError

    def refuse(self, bootstrap: str, **_: object) -> None:
        raise PublishError(f"cannot reach Kafka at {bootstrap} (KafkaTimeoutError): start it "
                           "with `fleetlog kafka up` or set FLEETLOG_KAFKA_BOOTSTRAP")

    monkeypatch.setattr(sinks.KafkaSink, "__init__", refuse)
    result = _run("simulate", "--nodes", "4", "--duration", "0.01h", "--to", "kafka://127.0.0.1:1")
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: cannot reach Kafka at 127.0.0.1:1")
    assert result.output.count("\n") == 1


SIMULATION_DOC = Path(__file__).resolve().parents[2] / "docs" / "simulation.md"


def _readme_section() -> str:
    """The page that documents `fleetlog simulate` (it moved from the README to docs/)."""
    return SIMULATION_DOC.read_text("utf-8")


def test_readme_lists_every_scenario() -> None:
    section = _readme_section()
    for name in SCENARIOS:
        assert f"| `{name}` |" in section, name


def test_readme_worked_example_is_real_output(tmp_path: Path) -> None:
    """docs/simulation.md's summary is what the command prints (except wall time, rates, paths)."""
    section = _readme_section()
    command = next(line for line in section.splitlines()
                   if line.startswith("$ fleetlog simulate"))
    block = section[section.index(command) + len(command):]
    shown = json.loads(block[:block.index("\n}\n") + 2])
    args = command.removeprefix("$ fleetlog ").split()
    args[args.index("--to") + 1] = f"duckdb:{tmp_path / 'fleet.duckdb'}"
    result = _run(*args)
    assert result.exit_code == 0, result.output
    actual = json.loads(result.output)
    for volatile in ("wall_s", "gpu_samples_per_s", "events_per_s", "to"):
        shown.pop(volatile)
        actual.pop(volatile)
    assert actual == shown
