"""Kafka settings in one place; secrets never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetlog.ingest.kafka.settings import KafkaConfigError, resolve


def test_resolution_order(tmp_path: Path) -> None:
    config = tmp_path / "kafka.properties"
    config.write_text("bootstrap=file:1\nclient_id=from-file\n")
    env = {"FLEETLOG_KAFKA_CONFIG": str(config), "FLEETLOG_KAFKA_CLIENT_ID": "from-env"}
    settings = resolve(env=env)
    assert (settings.bootstrap, settings.client_id, settings.origin) == (
        "file:1", "from-env", "config file")
    assert resolve("cli:9", env=env).bootstrap == "cli:9"
    assert resolve(env={}).bootstrap == "127.0.0.1:9092"
    state = tmp_path / "broker.json"
    state.write_text('{"bootstrap": "127.0.0.1:4242"}')
    local = resolve(env={}, local_state=state)
    assert (local.bootstrap, local.origin) == ("127.0.0.1:4242", "local broker")
    assert resolve("kafka://h:1", env={}).bootstrap == "h:1"


def test_secrets_never_appear(tmp_path: Path) -> None:
    password = tmp_path / "pw"
    password.write_text("hunter2\n")
    settings = resolve(env={
        "FLEETLOG_KAFKA_BOOTSTRAP": "b:9093", "FLEETLOG_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
        "FLEETLOG_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "FLEETLOG_KAFKA_SASL_USERNAME": "svc",
        "FLEETLOG_KAFKA_SASL_PASSWORD_FILE": str(password),
    })
    assert settings.client_kwargs()["sasl_plain_password"] == "hunter2"
    for shown in (repr(settings), str(settings), str(settings.describe())):
        assert "hunter2" not in shown
    assert settings.redact("auth failed for svc:hunter2") == "auth failed for svc:***"


def test_bad_settings_say_what_to_fix(tmp_path: Path) -> None:
    with pytest.raises(KafkaConfigError, match="SASL_MECHANISM"):
        resolve(env={"FLEETLOG_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"})
    with pytest.raises(KafkaConfigError, match="not one of"):
        resolve(env={"FLEETLOG_KAFKA_SECURITY_PROTOCOL": "CARRIER_PIGEON"})
    bad = tmp_path / "bad.properties"
    bad.write_text("colour=blue\n")
    with pytest.raises(KafkaConfigError, match=r"bad\.properties:1"):
        resolve(config_file=bad, env={})


def test_an_unknown_sasl_mechanism_is_refused_by_name() -> None:
    """Not passed on to kafka-python, whose bootstrap would only time out ("cannot reach")."""
    env = {"FLEETLOG_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
           "FLEETLOG_KAFKA_SASL_USERNAME": "u", "FLEETLOG_KAFKA_SASL_PASSWORD": "p"}
    with pytest.raises(KafkaConfigError) as info:
        resolve(env={**env, "FLEETLOG_KAFKA_SASL_MECHANISM": "SCRAM-SHA-1"})
    assert str(info.value) == ("SASL mechanism 'SCRAM-SHA-1' is not one of PLAIN, SCRAM-SHA-256, "
                               "SCRAM-SHA-512: fix FLEETLOG_KAFKA_SASL_MECHANISM")
    assert resolve(env={**env, "FLEETLOG_KAFKA_SASL_MECHANISM": "scram-sha-256"}).sasl_mechanism \
        == "SCRAM-SHA-256"
