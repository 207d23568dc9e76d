"""A produce/consume round trip of contract events through the real local Kafka broker."""

from __future__ import annotations

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from fleetlog.ingest import contract as c
from fleetlog.ingest.kafka.settings import KafkaSettings

pytestmark = pytest.mark.kafka


@pytest.mark.slow
def test_contract_events_round_trip_through_kafka(kafka_settings: KafkaSettings, unique_name):
    topic = unique_name("roundtrip")
    admin = KafkaAdminClient(**kafka_settings.client_kwargs())
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    admin.close()
    events = [
        c.make_event(c.gpu_batch(["n1"], [8], list(range(8)), {"power_w": [300.0 + i for i in
                                                                          range(8)]}),
                     time_us=1_000_000 * i, source="test")
        for i in range(50)
    ] + [c.make_event(c.XidReported(node="n1", gpu=2, xid=79), time_us=7, source="test")]
    producer = KafkaProducer(**kafka_settings.client_kwargs(), linger_ms=5)
    for event in events:
        producer.send(topic, key=event.key.encode(), value=c.encode(event))
    producer.flush()
    producer.close()

    consumer = KafkaConsumer(topic, **kafka_settings.client_kwargs(), auto_offset_reset="earliest",
                             group_id=unique_name("group"), consumer_timeout_ms=10_000)
    received = [c.decode(message.value) for message in consumer]
    consumer.close()
    assert len(received) == len(events)
    assert all(isinstance(r, c.Envelope) for r in received)
    assert sorted(r.id for r in received) == sorted(e.id for e in events)  # type: ignore[union-attr]
    by_id = {e.id: e for e in events}
    for r in received:
        assert c.encode(r) == c.encode(by_id[r.id])  # type: ignore[union-attr, arg-type]


@pytest.mark.slow
def test_keys_keep_an_entitys_events_in_order(kafka_settings: KafkaSettings, unique_name):
    topic = unique_name("order")
    producer = KafkaProducer(**kafka_settings.client_kwargs())
    for step in range(30):
        for job in ("a", "b", "c"):
            event = c.make_event(c.JobStepReported(job=job, step=step, step_time_s=1.0,
                                                   tokens_per_s=1.0), time_us=step, source="t")
            producer.send(topic, key=event.key.encode(), value=c.encode(event))
    producer.flush()
    producer.close()
    consumer = KafkaConsumer(topic, **kafka_settings.client_kwargs(), auto_offset_reset="earliest",
                             consumer_timeout_ms=10_000)
    steps: dict[str, list[int]] = {}
    for message in consumer:
        event = c.decode(message.value)
        assert isinstance(event, c.Envelope)
        assert isinstance(event.payload, c.JobStepReported)
        steps.setdefault(event.payload.job, []).append(event.payload.step)
    consumer.close()
    assert steps == {job: list(range(30)) for job in ("a", "b", "c")}


def test_a_sasl_mismatch_names_its_cause_rather_than_an_unreachable_broker(
        kafka_bootstrap: str, tmp_path) -> None:
    """The test broker's listener is PLAINTEXT: a SASL client is refused at the handshake. Both
    the consumer and the producer say so (and which settings to check), never "cannot reach"."""
    import os
    import subprocess
    import sys

    from fleetlog.ingest.kafka.consumer import KafkaRefused, KafkaSource
    from fleetlog.ingest.kafka.producer import Publisher, PublishError
    from fleetlog.ingest.kafka.settings import resolve

    env = {"FLEETLOG_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "FLEETLOG_KAFKA_SASL_MECHANISM":
           "SCRAM-SHA-256", "FLEETLOG_KAFKA_SASL_USERNAME": "svc",
           "FLEETLOG_KAFKA_SASL_PASSWORD": "pw-4711"}
    settings = resolve(kafka_bootstrap, env=env)
    with pytest.raises(KafkaRefused) as consumer_error:
        KafkaSource(settings, ["fleetlog-sasl-probe"], "g", positions=lambda _: {},
                    broker_timeout_s=3.0)
    with pytest.raises(PublishError) as producer_error:
        Publisher(settings, tuning={"bootstrap_timeout_ms": 3000})
    for error in (consumer_error.value, producer_error.value):
        text = str(error)
        assert "cannot reach" not in text
        assert "refused the SASL_PLAINTEXT connection with SASL mechanism SCRAM-SHA-256" in text
        assert "IllegalSaslState" in text and "FLEETLOG_KAFKA_SASL_MECHANISM" in text
        assert "pw-4711" not in text
    run = subprocess.run(
        [sys.executable, "-m", "fleetlog", "ingest", "--bootstrap", kafka_bootstrap, "--db",
         str(tmp_path / "x.duckdb"), "--until-idle", "1", "--broker-timeout", "3"],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert run.stderr.startswith("Error: Kafka at ") and run.stderr.count("\n") == 1
    assert "IllegalSaslState" in run.stderr
