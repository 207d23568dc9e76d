"""fleetlog: event-sourced telemetry and failure analysis for GPU training clusters.

The one installed name. Its sub-packages are the stages, each a top-level folder of the
repository (the product brief fixes them) that installs under this name: ``fleetlog.generators``
makes events, ``fleetlog.ingest`` holds the kernel every stage stands on (contract, store, Kafka)
and the ingestion stage, ``fleetlog.analysis`` reads the store, ``fleetlog.act`` stands above
analysis and carries its recommendations out through a scheduler (it imports the kernel and
analysis; nothing below imports it), ``fleetlog.cli`` is the command.
This package itself is the top floor: the composition root, where whatever wires several stages
together lives (``fleetlog.demo``: simulate, ingest, analyze, report; ``fleetlog.follow``:
``analyze --follow``, live analysis riding on the ingester's loop; ``fleetlog.act_follow``:
``act --follow``, the actor riding on the same loop). Below it, no stage imports another
sideways or back: generators and analysis import only the kernel. See docs/design.md.
"""

from __future__ import annotations
