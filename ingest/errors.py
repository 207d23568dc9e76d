"""The root of ingestion errors. Each message is one line that says what to do.

Bad input is never an error (it becomes a dead letter); these are failures that are not the
data's fault and stop ingestion: a source that does not exist. (The broker gone for too long is
the kernel's ``kafka.consumer.BrokerUnavailable``: the consumer raises it, for any stage.)
Whatever was committed before stays committed; the batch in flight is kept whole or not at all.
"""

from __future__ import annotations

from fleetlog.ingest.contract.errors import FleetlogError


class IngestError(FleetlogError):
    """Ingestion cannot go on; the message says why and what to do."""


class SourceMissing(IngestError):
    """A ``--from`` source (folder, file) does not exist or cannot be read."""
