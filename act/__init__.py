"""``fleetlog.act``: carry out recommendations through a scheduler, safely (docs/act.md).

It stands above analysis: it reads recommendations (the kernel's events, the store) and acts
through a ``Backend`` (``act.backend``; Slurm: ``act.slurm``) under the safety policy of
``act.actor``. Nothing below imports it; the CLI and the composition root (``fleetlog.act_follow``
for ``act --follow``) do.
"""

from __future__ import annotations
