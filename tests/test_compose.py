"""compose.yaml stays runnable: every fleetlog service runs a command the CLI has."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
import yaml

from fleetlog.cli.main import cli

COMPOSE = Path(__file__).parent.parent / "compose.yaml"


def _services() -> dict:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def test_kafka_service_is_kraft() -> None:
    kafka = _services()["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"


@pytest.mark.parametrize("name", [n for n, s in _services().items() if "command" in s])
def test_service_command_exists_in_the_cli(name: str) -> None:
    command = _services()[name]["command"]
    assert command[0] == "fleetlog"
    group: click.Command = cli
    args = command[1:]
    while isinstance(group, click.Group) and args and args[0] in group.commands:
        group, args = group.commands[args[0]], args[1:]
    assert group is not cli, f"{name}: `{' '.join(command[:2])}` is not a fleetlog command"
    ctx = group.make_context(command[1], list(args), resilient_parsing=False)
    assert ctx.params  # the options parsed: they all exist


def test_pipeline_stages_are_present() -> None:
    assert {"kafka", "generator", "ingester", "analyzer", "report"} <= set(_services())
