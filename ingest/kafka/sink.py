"""``KafkaSink``: the one ``Sink`` that publishes events to their topics, through ``Publisher``.

The simulator (``simulate --to kafka://``), ``fleetlog import --to kafka://`` and ``scrape``,
``replay --to kafka://`` and analysis (incidents on ``<prefix>.analysis``) each had a Kafka sink
or an inline publisher loop of their own; they differed only in whether they waited for delivery
after each write. They use this one now.

Each event goes to ``<prefix>.<family>`` keyed by ``event.key`` (``Publisher``). A dead letter goes
to ``<prefix>.dlq`` as a JSON object ``{"origin", "offset", "stage", "error", "raw_b64"}`` keyed by
``file:<origin>``, so it keeps where it came from and why.

``deliver_each_write``: wait for delivery after every ``write`` (a collector that polls, an
import, analysis results: each write is delivered before the caller goes on); off for a stream
that writes many small chunks (the simulator), which ``close`` flushes once at the end.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

from fleetlog.ingest import contract as c
from fleetlog.ingest.contract import DeadLetter, SinkTotals
from fleetlog.ingest.kafka.producer import Publisher
from fleetlog.ingest.kafka.settings import KafkaSettings, settings_for


class KafkaSink:
    """Publishes events and dead letters (see the module docstring).

    ``bootstrap`` is a ``HOST:PORT`` (resolved as every command resolves it) or settings
    already resolved.
    """

    def __init__(self, bootstrap: str | KafkaSettings, *, topic_prefix: str | None = None,
                 tuning: dict[str, Any] | None = None,
                 deliver_each_write: bool = False) -> None:
        self.settings = (settings_for(bootstrap, topic_prefix=topic_prefix)
                         if isinstance(bootstrap, str) else bootstrap)
        self.publisher = Publisher(self.settings, tuning=tuning, topic_prefix=topic_prefix)
        self.target = f"kafka://{self.settings.bootstrap}"
        self.totals = SinkTotals()
        self.deliver_each_write = deliver_each_write
        self._dlq = c.topic_name("dlq", self.publisher.prefix)

    def write(self, events: Sequence[c.Envelope], dead: Sequence[DeadLetter] = ()) -> None:
        send = self.publisher.send
        for event in events:
            send(event)
        for letter in dead:
            value = json.dumps({
                "origin": letter.origin, "offset": letter.offset, "stage": letter.stage,
                "error": letter.error,
                "raw_b64": base64.b64encode(letter.raw).decode() if letter.raw else None,
            }).encode()
            self.publisher.send_raw(self._dlq, f"file:{letter.origin}".encode(), value)
        if self.deliver_each_write:
            self.publisher.flush()
        self.totals.events += len(events)
        self.totals.dead_letters += len(dead)

    def close(self) -> None:
        self.publisher.close()

    def describe(self) -> dict[str, Any]:
        stats = self.publisher.stats
        return {"to": self.target, "topic_prefix": self.publisher.prefix,
                "messages": stats.messages, "bytes": stats.bytes}
