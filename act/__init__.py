"""``fleetlog.act``: closing the loop — telling people and acting through the scheduler, safely.

It stands above analysis and below the top floor: it reads the analysis's results (the kernel's
events, the store) and nothing below imports it; the CLI and the composition root
(``fleetlog.act_follow`` for ``act --follow``) do.

- ``alerts``: incidents to Alertmanager's v2 API (docs/alerts-and-metrics.md).
- ``backend`` (the small interface), ``slurm`` (the Slurm backend), ``actor`` (the safety
  policy), ``source`` (recommendations and past attempts), ``run`` (``act --db``): docs/act.md.
"""

from __future__ import annotations
