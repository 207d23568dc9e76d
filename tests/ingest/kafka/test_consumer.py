"""The ingester through a broker outage that kafka-python reports by raising out of ``poll``.

During an outage kafka-python 3 sometimes raises ``KafkaConnectionError: 111 ECONNREFUSED`` out
of ``KafkaConsumer.poll``: a lookup of the group coordinator fails to connect (which it counts
as stale metadata), so ``ensure_coordinator_ready`` waits for a metadata refresh (the one the
position-validation task ``_validate_offsets_async`` or the refresh loop asked for) and
re-raises that refresh's own refused connection. Whether the refresh gets to connect within
``poll``'s 0.2 s is a race against kafka-python's reconnect backoff (50 ms doubling to 1 s): likely
just after the broker stops, rare later; CI met it two seconds after a stop. These tests make it
certain with a setting of kafka-python, no reconnect backoff (``reconnect_backoff_max_ms=0``): every
retry connects, is refused, and ``poll`` raises each time, through the real code path.

In the first two tests two calls are wrapped, to hit the window and to know it was hit: the
consumer's rebalance listener (``KafkaSource._on_assigned``, which kafka-python runs on its IO
thread) stops the test's own real broker right after the first partitions were assigned and
paused, before anything was fetched, so kafka-python's next steps (committed offsets, resets,
fetches and their validation) meet a broker that is gone; and ``KafkaConsumer.poll`` records
what it raised and re-raises it unchanged. The third wraps ``poll`` to fail (its docstring says
why).
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ingest_support import (
    OwnBroker,
    Producer,
    group_landed,
    job_event,
    rack_event,
    store_counts,
    wait_for,
)
from kafka import KafkaConsumer
from kafka.errors import KafkaConnectionError, NodeNotReadyError

from fleetlog.ingest.ingester import KafkaIngest, default_topics, ingest_kafka
from fleetlog.ingest.kafka.consumer import BrokerUnavailable, ConsumerTuning, KafkaSource
from fleetlog.ingest.kafka.settings import KafkaSettings, resolve
from fleetlog.ingest.pipeline import IngestStats

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

# kafka-python's own knob, not a test double: retry every connection at once.
NO_RECONNECT_BACKOFF = ConsumerTuning(reconnect_backoff_max_ms=0)


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[OwnBroker]:
    own = OwnBroker(tmp_path / "kafka")
    own.up()
    try:
        yield own
    finally:
        own.down()


class Outage:
    """Stops ``own`` once, inside the first assignment's listener (kafka-python's IO thread, so
    nothing is fetched meanwhile), and records what ``KafkaConsumer.poll`` raised."""

    def __init__(self, own: OwnBroker, monkeypatch: pytest.MonkeyPatch) -> None:
        self.stopped = threading.Event()
        self.raised: list[BaseException] = []
        on_assigned, poll = KafkaSource._on_assigned, KafkaConsumer.poll

        def assigned_then_stop(source: KafkaSource, partitions: Any) -> None:
            on_assigned(source, partitions)
            if list(partitions) and not self.stopped.is_set():
                own.down()
                self.stopped.set()

        def recorded_poll(consumer: KafkaConsumer, *args: Any, **kwargs: Any) -> Any:
            try:
                return poll(consumer, *args, **kwargs)
            except BaseException as exc:
                self.raised.append(exc)
                raise

        monkeypatch.setattr(KafkaSource, "_on_assigned", assigned_then_stop)
        monkeypatch.setattr(KafkaConsumer, "poll", recorded_poll)

    @property
    def refused(self) -> int:
        """How often kafka-python raised a connection error out of poll."""
        return sum(isinstance(e, KafkaConnectionError) for e in self.raised)


class Ingester:
    """``ingest_kafka`` on a thread, its result or its exception kept."""

    def __init__(self, job: KafkaIngest, bootstrap: str) -> None:
        self.stop = threading.Event()
        self.stats: IngestStats | None = None
        self.error: BaseException | None = None
        settings = resolve(bootstrap, env={})

        def run() -> None:
            try:
                self.stats = ingest_kafka(job, settings, stop=self.stop, handle_signals=False)
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def finish(self, timeout_s: float = 120) -> None:
        self.stop.set()
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "the ingester did not stop"


def _died(ingester: Ingester) -> str:
    """Why the ingester died, with where (kafka-python's frames included)."""
    error = ingester.error
    return "the ingester died: " + "".join(traceback.format_exception(error)) if error else ""


def _send(producer: Producer, first: int, count: int) -> int:
    """Events ``first..first+count-1`` (every 7th twice) and one garbage message per 50; returns
    the messages sent (duplicates and garbage included: the offsets they take)."""
    messages = 0
    for i in range(first, first + count):
        twice = i % 7 == 0
        producer.send(rack_event(i) if i % 3 else job_event(i), twice=twice)
        messages += 2 if twice else 1
        if i % 50 == 0:
            producer.send_garbage(1)
            messages += 1
    producer.publisher.flush()
    return messages


def test_an_outage_as_positions_are_established_is_waited_out_and_loses_nothing(
    own_broker: OwnBroker, unique_name, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """kafka-python raises KafkaConnectionError out of poll while the broker is away (after the
    first assignment, before the first fetch): the ingester keeps waiting within
    --broker-timeout, positions the partitions it was given, and once the broker is back lands
    every event exactly once, including those sent again after the restart."""
    settings = resolve(own_broker.bootstrap, env={})
    prefix, db = unique_name("outage"), tmp_path / "fleet.duckdb"
    producer = Producer(settings, prefix)
    messages = _send(producer, 0, 300)
    outage = Outage(own_broker, monkeypatch)
    ingester = Ingester(KafkaIngest(db=db, topics=default_topics(prefix), group=unique_name("g"),
                                    batch_events=100, broker_timeout_s=120,
                                    tuning=NO_RECONNECT_BACKOFF), own_broker.bootstrap)
    try:
        # Three refusals in a row can only be seen by an ingester that survived the first two.
        wait_for(lambda: outage.refused >= 3 or not ingester.thread.is_alive(), 90,
                 "kafka-python to raise connection errors out of poll, three times")
        assert ingester.error is None, _died(ingester)
        assert ingester.thread.is_alive(), "the ingester must wait for the broker"
        assert group_landed(db) == 0  # the broker went away before anything was fetched
        own_broker.up()
        messages += _send(producer, 200, 200)  # 200..299 again (duplicates), 300..399 new
        wait_for(lambda: group_landed(db) == messages or not ingester.thread.is_alive(), 120,
                 "every message sent to land")
        assert ingester.error is None, _died(ingester)
    finally:
        ingester.finish()
        producer.close()
    assert ingester.error is None, _died(ingester)
    counts = store_counts(db)
    assert counts["events"] == counts["distinct"] == len(producer.ids) == 400
    assert counts["dead_letters"] == producer.garbage
    stats = ingester.stats
    assert stats is not None and stats.events == 400
    assert stats.duplicates == messages - producer.garbage - 400  # each message read once


def test_a_broker_that_stays_away_ends_ingestion_with_the_one_line_error(
    own_broker: OwnBroker, unique_name, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same outage, never ended: after --broker-timeout the ingester stops with
    BrokerUnavailable (the one line the CLI prints), not with kafka-python's exception."""
    settings = resolve(own_broker.bootstrap, env={})
    prefix, db = unique_name("gone"), tmp_path / "fleet.duckdb"
    producer = Producer(settings, prefix)
    _send(producer, 0, 50)
    producer.close()
    outage = Outage(own_broker, monkeypatch)
    ingester = Ingester(KafkaIngest(db=db, topics=default_topics(prefix), group=unique_name("g"),
                                    broker_timeout_s=5, tuning=NO_RECONNECT_BACKOFF),
                        own_broker.bootstrap)
    ingester.thread.join(120)
    assert not ingester.thread.is_alive()
    assert outage.refused >= 1, "kafka-python never raised: the test did not reach its window"
    assert isinstance(ingester.error, BrokerUnavailable), repr(ingester.error)
    message = str(ingester.error)
    assert message.startswith(f"Kafka at {own_broker.bootstrap} has not answered for ")
    assert "(--broker-timeout 5)" in message and len(message.splitlines()) == 1
    assert store_counts(db)["events"] == 0


def test_polls_that_keep_failing_while_the_broker_answers_end_with_the_one_line_error(
    kafka_settings: KafkaSettings, unique_name, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A retriable error out of every poll bounds the wait too, though the broker answers the
    probe. No broker fault does that on demand, so ``KafkaConsumer.poll`` is wrapped: once the
    consumer has partitions, each call raises NodeNotReadyError instead of polling (nothing is
    drained). After --broker-timeout the ingester stops with BrokerUnavailable naming it."""
    prefix, db = unique_name("failing"), tmp_path / "fleet.duckdb"
    producer = Producer(kafka_settings, prefix)
    _send(producer, 0, 20)
    producer.close()
    poll = KafkaConsumer.poll

    def failing_once_assigned(consumer: KafkaConsumer, *args: Any, **kwargs: Any) -> Any:
        if consumer.assignment():
            raise NodeNotReadyError("node 1 (wrapped by the test)")
        return poll(consumer, *args, **kwargs)

    monkeypatch.setattr(KafkaConsumer, "poll", failing_once_assigned)
    ingester = Ingester(KafkaIngest(db=db, topics=default_topics(prefix), group=unique_name("g"),
                                    broker_timeout_s=2), kafka_settings.bootstrap)
    ingester.thread.join(120)
    assert not ingester.thread.is_alive()
    assert isinstance(ingester.error, BrokerUnavailable), repr(ingester.error)
    assert ", last error NodeNotReadyError: node 1 (wrapped by the test) (--broker-timeout 2)" in (
        str(ingester.error))
    assert store_counts(db)["events"] == 0
