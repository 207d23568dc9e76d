"""``fleetlog.ingest``: the kernel every stage stands on, and the ingestion stage on top of it.

The kernel (any stage may import it; it imports no stage):
- ``contract``: events, their codec, the one valid time range, dead letters, the root exception,
  and the one ``Sink`` protocol (where any stage puts events);
- ``store``: the DuckDB schema, opening files and shard unions, the writer, ``StoreSink``;
- ``kafka``: connection settings, producer, consumer, ``KafkaSink``, the local broker runner.

The ingestion stage (lands events in the store; only the CLI and the top floor import it):
- ``ingester`` (Kafka -> DuckDB, exactly once in effect) with ``pipeline`` (the batch being built,
  the writer thread) and ``worker`` (decode and write in a second process);
- ``jsonl`` (``simulate --to jsonl:`` folders), ``readers`` (real formats: ``fleetlog import``),
  ``replay`` (stored events back to Kafka or into another store).
"""
