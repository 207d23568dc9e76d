"""The one root of fleetlog's exceptions. Each message is one line that says what to do.

Every failure a user can act on derives from ``FleetlogError``; the CLI turns exactly this class
into a one-line message (``fleetlog.cli.errors.translate``), anything else is a bug and keeps its
traceback. Bad input is never an exception: it becomes a dead letter (``DeadLetter``).

The families, each defined beside the code that raises it:
- ``StoreError`` (``store.schema``): the DuckDB file is missing, locked, full or unreadable;
- ``BrokerError``, ``KafkaConfigError``, ``PublishError``, ``BrokerUnavailable`` (``kafka``): the
  broker runner, the connection settings, the producer, the consumer;
- ``IngestError`` (``ingest.errors``) and ``ReaderError`` (``readers.errors``), ``ReplayError``;
- ``SimulationError`` (generators), ``AnalysisError``, ``QueryError``, ``ReportError``,
  ``ConfigError`` (a config file that does not fit its schema) (analysis).
"""

from __future__ import annotations


class FleetlogError(Exception):
    """A failure the user can act on; the message's first line says what to do."""
