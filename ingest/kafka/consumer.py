"""The Kafka side of ingestion: a kafka-python consumer in a group, positioned by the store.

The store, not Kafka, says where each partition resumes. kafka-python 3 runs rebalance callbacks
on its IO thread while the main thread waits inside ``poll()``; the callbacks do no store work:

- on revocation (or loss) they wait for the batch being written to finish (``quiesce``) so the
  offsets other members read are final, and record the partitions: the main loop drops what it
  buffered for them (``Polled.revoked``);
- on assignment they record the partitions and pause them, so the same ``poll()`` cannot fetch
  them from Kafka's committed offsets; back on the main thread, ``poll`` asks ``positions`` where
  each resumes (the stored offsets), seeks there and resumes them.

Every returned record is checked against the next expected offset of its partition, so a record
already landed is never handed out twice. Kafka's committed offsets are written after each batch
(``commit``) for lag monitoring only.

A broker outage is one thing however kafka-python reports it. Mostly it retries inside ``poll()``
and returns nothing; sometimes it raises a retriable error out of it instead (a coordinator
lookup that fails, then the metadata refresh it waits for: ``KafkaConnectionError: 111
ECONNREFUSED``). ``poll`` takes that as "nothing arrived": what the rebalance callbacks recorded
is still handed over and positioned, and ``check_broker`` decides, as for any silence, when the
broker has been away longer than ``broker_timeout_s``.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fleetlog.ingest.contract.errors import FleetlogError
from fleetlog.ingest.kafka.cause import watch_connect
from fleetlog.ingest.kafka.settings import KafkaSettings


class BrokerUnavailable(FleetlogError):
    """Kafka did not answer for longer than the configured time (defined here, in the kernel
    where it is raised, so the kernel imports nothing of the ingestion stage)."""


class KafkaRefused(BrokerUnavailable):
    """The broker answered and refused the connection (SASL, authentication, TLS): retrying will
    not help; the message names the cause and the settings to check."""


TP = tuple[str, int]


@dataclass(frozen=True)
class ConsumerTuning:
    """kafka-python fetch settings; the defaults are tuned on gpu.sampled rack batches (bench/)."""

    # Fetches this size keep the consume rate of bigger ones here (~25k rack messages/s with 8/2
    # as with 32/8 MiB) at half the consumer's memory: kafka-python holds a fetch in flight
    # beside the one being drained, and each is parsed into records (peak 151 vs 319 MB).
    fetch_max_bytes: int = 8 * 1024 * 1024
    max_partition_fetch_bytes: int = 2 * 1024 * 1024
    max_poll_records: int = 8192
    fetch_max_wait_ms: int = 100
    check_crcs: bool = True  # crc32c makes this cheap; corruption must not be landed
    session_timeout_ms: int = 10_000  # how soon a killed member's partitions move on
    heartbeat_interval_ms: int = 2_000
    reconnect_backoff_max_ms: int = 1_000  # reconnect within a second once the broker is back

    def kwargs(self) -> dict[str, Any]:
        return {
            "fetch_max_bytes": self.fetch_max_bytes,
            "max_partition_fetch_bytes": self.max_partition_fetch_bytes,
            "max_poll_records": self.max_poll_records,
            "fetch_max_wait_ms": self.fetch_max_wait_ms,
            "check_crcs": self.check_crcs,
            "session_timeout_ms": self.session_timeout_ms,
            "heartbeat_interval_ms": self.heartbeat_interval_ms,
            "reconnect_backoff_max_ms": self.reconnect_backoff_max_ms,
        }


@dataclass
class Polled:
    records: list[tuple[TP, list[Any]]] = field(default_factory=list)  # ConsumerRecords
    revoked: set[TP] = field(default_factory=set)  # drop anything buffered for these
    assigned: set[TP] = field(default_factory=set)  # (re)positioned at their stored offsets
    count: int = 0


class KafkaSource:
    """Subscribes ``topics`` in ``group``; ``poll`` returns records in offset order, once."""

    def __init__(
        self, settings: KafkaSettings, topics: Collection[str], group: str, *,
        positions: Callable[[set[TP]], Mapping[TP, int]],
        quiesce: Callable[[], None] = lambda: None,
        tuning: ConsumerTuning | None = None,
        broker_timeout_s: float = 60.0,
    ) -> None:
        for name in ("kafka", "kafka.conn", "kafka.client", "kafka.coordinator"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        self.settings = settings
        self.topics = list(topics)
        self.group = group
        self._positions = positions
        self._quiesce = quiesce
        self.broker_timeout_s = broker_timeout_s
        self._lock = threading.Lock()
        self._revoked: set[TP] = set()
        self._assigned: set[TP] = set()
        self._expected: dict[TP, int] = {}  # next offset to hand out, per assigned partition
        self.end_offsets: dict[TP, int] = {}
        self.last_contact = time.monotonic()
        self._last_probe = 0.0
        self._poll_failing: tuple[float, str] | None = None  # since when, and the last error
        self._tuning = tuning or ConsumerTuning()
        # kafka-python can (rarely) stay in a join that never completes while the group goes on
        # without it; after this long out of a stable group the consumer is built anew.
        self.stuck_after_s = max(30.0, 4 * self._tuning.session_timeout_ms / 1000)
        self._stable_at = time.monotonic()
        self._consumer = self._connect()

    def _connect(self) -> Any:
        from kafka import KafkaConsumer
        from kafka.errors import KafkaError

        # A KafkaConsumer that fails to bootstrap leaves its IO thread behind: ask the socket first.
        if not _reachable(self.settings.bootstrap, self.broker_timeout_s):
            raise BrokerUnavailable(
                f"cannot reach Kafka at {self.settings.bootstrap} (no answer for "
                f"{self.broker_timeout_s:g}s): start it with `fleetlog kafka up`, or pass "
                "--bootstrap HOST:PORT"
            )
        with watch_connect() as cause:
            try:
                consumer = KafkaConsumer(
                    **self.settings.client_kwargs(), group_id=self.group,
                    enable_auto_commit=False, auto_offset_reset="earliest",
                    bootstrap_timeout_ms=int(self.broker_timeout_s * 1000),
                    **self._tuning.kwargs(),
                )
            except (KafkaError, OSError, ValueError) as exc:
                refused = cause.message(self.settings)
                if refused is not None:  # it answered, and said no: not a matter of reaching it
                    raise KafkaRefused(refused) from exc
                raise BrokerUnavailable(
                    f"cannot reach Kafka at {self.settings.bootstrap} "
                    f"({self.settings.redact(str(exc))}): start it with `fleetlog kafka up`, or "
                    "pass --bootstrap HOST:PORT"
                ) from exc
        consumer.subscribe(self.topics, listener=_listener(self))
        return consumer

    def _watchdog(self) -> None:
        from kafka.coordinator.base import MemberState

        now = time.monotonic()
        if self._consumer.group_metadata().state is MemberState.STABLE:
            self._stable_at = now
            return
        if now - self._stable_at < self.stuck_after_s or now - self.last_contact > 5.0:
            return  # still joining, or the broker is away (check_broker's business)
        self._on_revoked(self._consumer.assignment())
        self.close()
        self._consumer = self._connect()
        self._stable_at = now

    # -- rebalance callbacks: kafka-python's IO thread, main thread blocked in poll() ----------

    def _on_revoked(self, partitions: Iterable[Any]) -> None:
        self._quiesce()  # the batch in flight commits (with its offsets) before anyone reads them
        with self._lock:
            for tp in partitions:
                key = (tp.topic, tp.partition)
                self._revoked.add(key)
                self._assigned.discard(key)
                self._expected.pop(key, None)

    def _on_assigned(self, partitions: Iterable[Any]) -> None:
        partitions = list(partitions)
        if partitions:
            self._consumer.pause(*partitions)  # nothing is fetched before we seek
        with self._lock:
            self._assigned.update((tp.topic, tp.partition) for tp in partitions)

    # -- main thread ------------------------------------------------------------------------

    def poll(self, timeout_s: float, max_records: int | None = None) -> Polled:
        raw = self._poll_kafka(timeout_s, max_records)
        self._watchdog()
        with self._lock:
            polled = Polled(revoked=self._revoked, assigned=self._assigned)
            self._revoked, self._assigned = set(), set()
        if polled.assigned:
            self._position(polled.assigned)
        for tp, records in raw.items():
            key = (tp.topic, tp.partition)
            expected = self._expected.get(key)
            if expected is None or not records:
                continue  # not positioned by us (cannot happen: paused until positioned)
            if records[0].offset < expected:
                records = [r for r in records if r.offset >= expected]
                if not records:
                    continue
            self._expected[key] = records[-1].offset + 1
            polled.records.append((key, records))
            polled.count += len(records)
        if polled.count:
            self.last_contact = time.monotonic()
        return polled

    def _poll_kafka(self, timeout_s: float, max_records: int | None) -> Mapping[Any, list[Any]]:
        """kafka-python's poll; a retriable error out of it (the broker away) is no records.

        For a broker that does not answer, kafka-python 3 raises ``RetriableError`` subclasses
        (``KafkaConnectionError``, ``NodeNotReadyError``, ``Cancelled``, timeouts), from the
        group coordinator's or the committed offsets' step of its poll: before any record is
        drained, so nothing fetched is dropped, and its state stays consistent for the next
        call (the join, the positions it was establishing and their validation resume there).
        Anything else (authentication, a bad setting, a truncated log) still propagates:
        retrying would not help.
        """
        from kafka.errors import RetriableError

        started = time.monotonic()
        try:
            raw: Mapping[Any, list[Any]] = self._consumer.poll(
                timeout_ms=int(timeout_s * 1000), max_records=max_records)
        except RetriableError as exc:
            now = time.monotonic()
            since = self._poll_failing[0] if self._poll_failing else now
            self._poll_failing = (since, self.settings.redact(str(exc)))
            # kafka-python may raise at once, again and again: wait out the poll's time, as a
            # poll would have, so the loop does not spin while the broker is away.
            time.sleep(max(0.0, started + timeout_s - now))
            return {}
        self._poll_failing = None
        return raw

    def _position(self, assigned: set[TP]) -> None:
        from kafka import TopicPartition

        starts = self._positions(assigned)
        current = {(tp.topic, tp.partition) for tp in self._consumer.assignment()}
        for key in sorted(assigned & current):
            tp = TopicPartition(*key)
            start = starts.get(key)
            if start is None:
                self._consumer.seek_to_beginning(tp)
                self._expected[key] = 0
            else:
                self._consumer.seek(tp, start)
                self._expected[key] = start
            self._consumer.resume(tp)

    def assignment(self) -> list[TP]:
        return sorted((tp.topic, tp.partition) for tp in self._consumer.assignment())

    def lag(self) -> dict[TP, int | None]:
        """Records not yet handed out, per assigned partition (None: not known yet)."""
        out: dict[TP, int | None] = {}
        for key in self.assignment():
            end = self.end_offsets.get(key)
            highwater = self._consumer.highwater(_tp(key))
            if highwater is not None and (end is None or highwater > end):
                end = highwater
            expected = self._expected.get(key)
            out[key] = None if end is None or expected is None else max(0, end - expected)
        return out

    def probe(self, timeout_s: float = 2.0) -> bool:
        """Ask the broker for the end offsets of our topics: is it there, are we caught up?"""
        from kafka.errors import KafkaError

        self._last_probe = time.monotonic()
        partitions = self._known_partitions()
        if not partitions:
            return True  # no metadata yet: nothing to ask (the constructor reached the broker)
        try:
            ends = self._consumer.end_offsets(partitions, timeout_ms=int(timeout_s * 1000))
        except (KafkaError, OSError):
            return False
        self.end_offsets.update({(tp.topic, tp.partition): o for tp, o in ends.items()})
        self.last_contact = time.monotonic()
        return True

    def _known_partitions(self) -> list[Any]:
        cluster = self._consumer._cluster
        out = []
        for topic in self.topics:
            out += [_tp((topic, p)) for p in sorted(cluster.partitions_for_topic(topic) or ())]
        return out

    def caught_up(self) -> bool:
        """A settled member of the group (its assignment known) with nothing left to read."""
        from kafka.coordinator.base import MemberState

        if self._consumer.group_metadata().state is not MemberState.STABLE:
            return False  # still joining: partitions may be on their way
        return all(lag == 0 for lag in self.lag().values())

    def check_broker(self) -> None:
        """When nothing arrives, probe now and then; raise once the broker is gone too long."""
        now = time.monotonic()
        if now - self._last_probe < 1.0:
            return
        answered, failing = self.probe(), self._poll_failing
        if answered and failing is None:
            return
        # A broker that answers the probe while every poll fails is away too, for polling.
        silent = now - (failing[0] if answered and failing else self.last_contact)
        if silent > self.broker_timeout_s:
            cause = f", last error {failing[1]}" if failing else ""
            raise BrokerUnavailable(
                f"Kafka at {self.settings.bootstrap} has not answered for {silent:.0f}s{cause} "
                f"(--broker-timeout {self.broker_timeout_s:g}): start it or check the address, "
                "then run again; every committed batch is kept and ingestion resumes after it"
            )

    def commit(self, offsets: Mapping[TP, int]) -> None:
        """Tell Kafka how far we got (lag monitoring only; never read back to position)."""
        from kafka import OffsetAndMetadata
        from kafka.errors import KafkaError

        current = set(self.assignment())
        mine = {_tp(k): OffsetAndMetadata(o, "", -1) for k, o in offsets.items() if k in current}
        if not mine:
            return
        with contextlib.suppress(KafkaError, OSError):  # informational: failure changes nothing
            self._consumer.commit_async(mine)

    def close(self) -> None:
        with contextlib.suppress(Exception):  # a consumer whose broker is gone may fail to close
            self._consumer.close(autocommit=False, timeout_ms=5000)


def _reachable(bootstrap: str, timeout_s: float) -> bool:
    """Does any bootstrap server accept a TCP connection within ``timeout_s``?"""
    deadline = time.monotonic() + timeout_s
    while True:
        for server in bootstrap.split(","):
            host, _, port = server.strip().rpartition(":")
            try:
                with socket.create_connection((host or "127.0.0.1", int(port or 9092)),
                                              timeout=min(1.0, timeout_s)):
                    return True
            except (OSError, ValueError):
                continue
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)


def _tp(key: TP) -> Any:
    from kafka import TopicPartition

    return TopicPartition(*key)


def _listener(source: KafkaSource) -> Any:
    from kafka import ConsumerRebalanceListener

    class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
        def on_partitions_revoked(self, revoked: Any) -> None:
            source._on_revoked(revoked)

        def on_partitions_assigned(self, assigned: Any) -> None:
            source._on_assigned(assigned)

        def on_partitions_lost(self, lost: Any) -> None:
            source._on_revoked(lost)

    return Listener()
