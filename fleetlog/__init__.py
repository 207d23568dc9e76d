"""fleetlog: event-sourced telemetry and failure analysis for GPU training clusters.

The one installed name. Its sub-packages are the stages, each a top-level folder of the
repository (the product brief fixes them) that installs under this name: ``fleetlog.generators``
makes events, ``fleetlog.ingest`` holds the kernel every stage stands on (contract, store, Kafka)
and the ingestion stage, ``fleetlog.analysis`` reads the store, ``fleetlog.cli`` is the command.
This package itself is the top floor: the composition root that wires several stages together
(``fleetlog.demo``, ``fleetlog.follow``). See docs/design.md.
"""

from __future__ import annotations
