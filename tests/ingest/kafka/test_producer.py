"""The producer through a broker that goes away: a one-line ``PublishError``, not a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from ingest_support import OwnBroker

from fleetlog.ingest import contract as c
from fleetlog.ingest.kafka.producer import Publisher, PublishError
from fleetlog.ingest.kafka.settings import resolve

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_a_broker_gone_while_sending_is_a_publish_error(tmp_path: Path) -> None:
    own = OwnBroker(tmp_path / "kafka")
    own.up()
    try:
        settings = resolve(own.bootstrap, env={})
        # kafka-python's own bound on how long send() blocks for metadata (default 60 s).
        publisher = Publisher(settings, tuning={"max_block_ms": 3000})
        event = c.make_event(c.XidReported(node="n1", gpu=2, xid=79), time_us=7, source="test")
    finally:
        own.down()
    try:
        with pytest.raises(PublishError) as error:
            # A topic whose metadata the producer never had: send() must ask the broker for it.
            publisher.send_raw("fleetlog-gone-topic", event.key.encode(), c.encode(event))
    finally:
        publisher.close()  # nothing was queued: nothing to wait for
    text = str(error.value)
    assert text.startswith(f"Kafka at {own.bootstrap} did not take an event for "
                           "fleetlog-gone-topic (") and "\n" not in text
    assert "is the broker up?" in text
