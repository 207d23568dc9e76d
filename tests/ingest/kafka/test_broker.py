"""The KRaft cluster id the broker's storage is formatted with."""

from __future__ import annotations

import base64
import uuid

import pytest

from fleetlog.ingest.kafka import broker


def test_a_cluster_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    """An id starting with '-' (first six bits 62 in URL-safe base64) is read by kafka-storage's
    argument parser as an option, and formatting fails: draw again, as Kafka's Uuid does."""
    dashed = uuid.UUID(bytes=bytes([0xF8]) + bytes(15))
    plain = uuid.UUID(bytes=bytes([0x10]) + bytes(15))
    assert base64.urlsafe_b64encode(dashed.bytes).decode().startswith("-")
    draws = iter([dashed, plain])
    monkeypatch.setattr(broker.uuid, "uuid4", lambda: next(draws))
    assert broker.cluster_id() == base64.urlsafe_b64encode(plain.bytes).rstrip(b"=").decode()


def test_a_cluster_id_is_a_uuid_in_url_safe_base64() -> None:
    ids = {broker.cluster_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)
