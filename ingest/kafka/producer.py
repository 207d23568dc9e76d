"""Publishes contract events to their Kafka topics with a producer tuned for throughput.

kafka-python's defaults (linger 0 ms, 16 KiB batches) send one small request per message; telemetry
is many mid-sized messages, so we wait a few milliseconds and fill large batches. Keys are the
events' keys (docs/design.md#topics-and-keys), so an entity's events stay in order on one partition.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from fleetlog.ingest import contract as c
from fleetlog.ingest.contract.errors import FleetlogError
from fleetlog.ingest.kafka.cause import watch_connect
from fleetlog.ingest.kafka.settings import KafkaSettings


class PublishError(FleetlogError):
    """Events could not be delivered; the message names the broker and what to do."""


@dataclass
class PublishStats:
    messages: int = 0
    bytes: int = 0
    errors: int = 0
    last_error: str | None = None


# Tuned on this project's messages (a rack's scrape is ~5-20 KB); see bench/.
TUNED: dict[str, Any] = {"linger_ms": 20, "batch_size": 1_048_576, "compression_type": None}
KAFKA_PYTHON_DEFAULTS: dict[str, Any] = {}


class Publisher:
    """``send`` events; ``flush`` waits for delivery; ``close`` flushes and disconnects."""

    def __init__(
        self, settings: KafkaSettings, *, tuning: dict[str, Any] | None = None,
        topic_prefix: str | None = None,
    ) -> None:
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        logging.getLogger("kafka").setLevel(logging.ERROR)
        self.settings = settings
        self.prefix = topic_prefix or settings.topic_prefix
        self.stats = PublishStats()
        self._topics = {family: c.topic_name(family, self.prefix) for family in c.TOPIC_FAMILIES}
        options = dict(TUNED if tuning is None else tuning)
        options.setdefault("max_request_size", 16 * 1024 * 1024)
        with watch_connect() as cause:
            try:
                self._producer = KafkaProducer(**settings.client_kwargs(), **options)
            except (KafkaError, OSError) as exc:
                refused = cause.message(settings)
                if refused is not None:  # it answered and said no (SASL, TLS): say why
                    raise PublishError(refused) from exc
                raise PublishError(
                    f"cannot reach Kafka at {settings.bootstrap} "
                    f"({settings.redact(str(exc))}): start it with `fleetlog kafka up` "
                    "or set FLEETLOG_KAFKA_BOOTSTRAP"
                ) from exc

    def topic_for(self, event: c.Envelope) -> str:
        return self._topics[event.topic_family]

    def send(self, event: c.Envelope) -> None:
        self.send_raw(self.topic_for(event), event.key.encode(), c.encode(event))

    def send_raw(self, topic: str, key: bytes | None, value: bytes) -> None:
        from kafka.errors import KafkaError

        try:
            future = self._producer.send(topic, key=key, value=value)
        except KafkaError as exc:
            # The broker went away: kafka-python waits for the topic's metadata (or for room in
            # its full buffer) up to max_block_ms, then raises. An outage, not a bug.
            raise PublishError(
                f"Kafka at {self.settings.bootstrap} did not take an event for {topic} "
                f"({self.settings.redact(str(exc))}): is the broker up? The events sent before "
                "it may or may not have been delivered; producing them again lands each once"
            ) from exc
        future.add_errback(self._on_error)
        self.stats.messages += 1
        self.stats.bytes += len(value)

    def _on_error(self, exc: BaseException) -> None:
        self.stats.errors += 1
        self.stats.last_error = self.settings.redact(str(exc))

    def flush(self, timeout_s: float | None = 60.0) -> None:
        from kafka.errors import KafkaError

        try:
            self._producer.flush(timeout=timeout_s)
        except KafkaError as exc:
            raise PublishError(
                f"Kafka at {self.settings.bootstrap} did not take the events in time "
                f"({self.settings.redact(str(exc))}): is the broker up?"
            ) from exc
        if self.stats.errors:
            raise PublishError(
                f"{self.stats.errors} events were not delivered to {self.settings.bootstrap}: "
                f"{self.stats.last_error}"
            )

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._producer.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
