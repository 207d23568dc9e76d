"""Kafka connection settings, in one place for every producer, consumer and admin client.

Resolution order for each setting: an explicit argument, then the environment
(``FLEETLOG_KAFKA_*``), then a properties file (``FLEETLOG_KAFKA_CONFIG`` or ``--kafka-config``),
then the local broker started by ``fleetlog kafka up``, then the default ``127.0.0.1:9092``.

Secrets (the SASL password) are held in ``Secret``, whose ``str`` and ``repr`` are ``***``; any
error text leaving this module goes through ``redact`` so a password never reaches a log.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from fleetlog.ingest.contract import DEFAULT_TOPIC_PREFIX
from fleetlog.ingest.contract.errors import FleetlogError

DEFAULT_BOOTSTRAP: Final = "127.0.0.1:9092"
ENV_PREFIX: Final = "FLEETLOG_KAFKA_"
_KEYS: Final = (
    "bootstrap", "client_id", "security_protocol", "sasl_mechanism", "sasl_username",
    "sasl_password", "sasl_password_file", "ssl_cafile", "ssl_certfile", "ssl_keyfile",
)
SECURITY_PROTOCOLS: Final = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
# The mechanisms a user name and password configure (kafka-python's others need settings of
# their own, which fleetlog does not pass).
SASL_MECHANISMS: Final = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class KafkaConfigError(FleetlogError, ValueError):
    """The Kafka settings are inconsistent; the message says which one to fix."""


class Secret:
    """A string that never prints itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap: str = DEFAULT_BOOTSTRAP
    client_id: str = "fleetlog"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: Secret | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    topic_prefix: str = DEFAULT_TOPIC_PREFIX
    origin: str = "default"  # where the bootstrap address came from, for messages

    def __post_init__(self) -> None:
        if self.security_protocol not in SECURITY_PROTOCOLS:
            raise KafkaConfigError(
                f"security protocol {self.security_protocol!r} is not one of "
                f"{', '.join(SECURITY_PROTOCOLS)}"
            )
        if self.security_protocol.startswith("SASL") and not self.sasl_mechanism:
            raise KafkaConfigError(
                f"{self.security_protocol} needs a SASL mechanism: set "
                f"{ENV_PREFIX}SASL_MECHANISM (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)"
            )
        if self.sasl_mechanism is not None and self.sasl_mechanism not in SASL_MECHANISMS:
            raise KafkaConfigError(
                f"SASL mechanism {self.sasl_mechanism[:40]!r} is not one of "
                f"{', '.join(SASL_MECHANISMS)}: fix {ENV_PREFIX}SASL_MECHANISM"
            )

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for kafka-python's KafkaProducer / KafkaConsumer / KafkaAdminClient."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap.split(","),
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = (
                self.sasl_password.reveal() if self.sasl_password else None
            )
        for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            value = getattr(self, key)
            if value:
                kwargs[key] = value
        return kwargs

    def redact(self, text: str) -> str:
        """Remove the secret from any text that might be shown or logged."""
        if self.sasl_password and self.sasl_password.reveal():
            text = text.replace(self.sasl_password.reveal(), "***")
        return text

    def describe(self) -> dict[str, Any]:
        """Safe to print: no secrets."""
        return {
            "bootstrap": self.bootstrap,
            "origin": self.origin,
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
            "sasl_mechanism": self.sasl_mechanism,
            "sasl_username": self.sasl_username,
            "sasl_password": "***" if self.sasl_password else None,
            "topic_prefix": self.topic_prefix,
        }


def read_properties(path: Path) -> dict[str, str]:
    """``key=value`` lines (``#`` comments); keys as in ``FLEETLOG_KAFKA_*`` minus the prefix."""
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise KafkaConfigError(f"cannot read Kafka config file {path}: {exc.strerror}") from exc
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip().lower().replace(".", "_").replace("-", "_")
        if not sep or key not in _KEYS:
            raise KafkaConfigError(
                f"{path}:{number}: expected one of {', '.join(_KEYS)} as key=value"
            )
        values[key] = value.strip()
    return values


def local_broker_bootstrap(state_file: Path) -> str | None:
    try:
        state = json.loads(state_file.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    bootstrap = state.get("bootstrap")
    return bootstrap if isinstance(bootstrap, str) else None


def resolve(
    bootstrap: str | None = None,
    *,
    config_file: str | Path | None = None,
    topic_prefix: str | None = None,
    env: Mapping[str, str] | None = None,
    local_state: Path | None = None,
) -> KafkaSettings:
    env = os.environ if env is None else env
    values: dict[str, str] = {}
    config_path = config_file or env.get(f"{ENV_PREFIX}CONFIG")
    if config_path:
        values.update(read_properties(Path(config_path)))
    for key in _KEYS:
        if f"{ENV_PREFIX}{key.upper()}" in env:
            values[key] = env[f"{ENV_PREFIX}{key.upper()}"]
    origin = "environment" if f"{ENV_PREFIX}BOOTSTRAP" in env else "config file"
    if bootstrap:
        values["bootstrap"], origin = bootstrap, "command line"
    if "bootstrap" not in values:
        from_local = local_broker_bootstrap(local_state) if local_state else None
        values["bootstrap"], origin = (
            (from_local, "local broker") if from_local else (DEFAULT_BOOTSTRAP, "default")
        )
    password: Secret | None = None
    if values.get("sasl_password_file"):
        try:
            password = Secret(Path(values["sasl_password_file"]).read_text("utf-8").strip())
        except OSError as exc:
            raise KafkaConfigError(
                f"cannot read SASL password file {values['sasl_password_file']}: {exc.strerror}"
            ) from exc
    elif values.get("sasl_password"):
        password = Secret(values["sasl_password"])
    settings = KafkaSettings(
        bootstrap=values["bootstrap"].removeprefix("kafka://"),
        client_id=values.get("client_id", "fleetlog"),
        security_protocol=values.get("security_protocol", "PLAINTEXT").upper(),
        sasl_mechanism=(values.get("sasl_mechanism") or "").strip().upper() or None,
        sasl_username=values.get("sasl_username") or None,
        sasl_password=password,
        ssl_cafile=values.get("ssl_cafile") or None,
        ssl_certfile=values.get("ssl_certfile") or None,
        ssl_keyfile=values.get("ssl_keyfile") or None,
        topic_prefix=topic_prefix or env.get("FLEETLOG_TOPIC_PREFIX", DEFAULT_TOPIC_PREFIX),
        origin=origin,
    )
    return settings


def settings_for(
    bootstrap: str | None = None, *, topic_prefix: str | None = None,
    config_file: str | Path | None = None,
) -> KafkaSettings:
    """Resolve settings the way every command does, including the local broker's state file."""
    from fleetlog.ingest.kafka.broker import data_dir_default

    return resolve(
        bootstrap, config_file=config_file, topic_prefix=topic_prefix,
        local_state=data_dir_default() / "broker.json",
    )
