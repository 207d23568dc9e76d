"""Kafka, as every stage uses it: settings, producer, consumer, and a local broker to run.

- ``settings``: connection settings resolved once (arguments, environment, properties file, the
  local broker), secrets redacted;
- ``producer``: publishes contract events to their topics, tuned for throughput;
- ``consumer``: a consumer in a group, positioned by the store, never handing a record twice;
- ``sink``: ``KafkaSink``, the one ``Sink`` (``contract.sink``) that publishes, for every stage;
- ``broker``: fetches Apache Kafka from Maven Central and runs a single-node KRaft broker.
"""
