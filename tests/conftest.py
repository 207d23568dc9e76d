"""Shared fixtures. Kafka tests use a real broker: ``$FLEETLOG_KAFKA_BOOTSTRAP`` when set (as
``make test`` does), otherwise a broker this session starts on free ports and stops at the end.
Under CI (``CI=true``) a broker that does not come up fails the run; it is never skipped."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fleetlog.ingest.kafka import broker
from fleetlog.ingest.kafka.settings import KafkaSettings, resolve

_BROKER_INFO: dict[str, str] = {}


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory):
    """Keep tests from reading a developer's local broker state or topic prefix."""
    monkeypatch.delenv("FLEETLOG_TOPIC_PREFIX", raising=False)
    monkeypatch.setenv("FLEETLOG_KAFKA_DIR", str(tmp_path_factory.getbasetemp() / "no-broker"))


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    given = os.environ.get("FLEETLOG_KAFKA_BOOTSTRAP")
    if given:
        if not broker.answers(given, timeout_s=10.0):
            pytest.fail(f"FLEETLOG_KAFKA_BOOTSTRAP={given} does not answer")
        _BROKER_INFO.update(bootstrap=given, origin="FLEETLOG_KAFKA_BOOTSTRAP")
        yield given
        return
    data_dir = tmp_path_factory.mktemp("kafka")
    try:
        state = broker.up(data_dir, port=broker.free_port(), controller_port=broker.free_port())
    except broker.BrokerError as exc:
        pytest.fail(f"could not start the local Kafka broker: {exc}")
    _BROKER_INFO.update(bootstrap=state.bootstrap, origin=f"started by the tests (pid {state.pid})")
    try:
        yield state.bootstrap
    finally:
        broker.down(data_dir)


@pytest.fixture
def kafka_settings(kafka_bootstrap: str) -> KafkaSettings:
    return resolve(kafka_bootstrap, env={})


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    """Per-test names for topics, prefixes and consumer groups, so tests never share them."""

    def make(stem: str) -> str:
        return f"{stem}-{uuid.uuid4().hex[:12]}"

    return make


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "fleet.duckdb"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _BROKER_INFO:
        terminalreporter.write_line(
            f"Kafka tests ran against the real broker at {_BROKER_INFO['bootstrap']} "
            f"({_BROKER_INFO['origin']})"
        )
