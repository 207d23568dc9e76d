"""``fleetlog_actions_total{outcome, action}``: the Prometheus counter of ``act``'s attempts.

The name and labels are fixed: the Grafana dashboard queries them (outcome is ``executed``,
``skipped`` or ``failed``; a dry run's planned actions are not counted).
"""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter

ACTIONS_TOTAL: Final = Counter(
    "fleetlog_actions_total", "Actions fleetlog act attempted, by outcome and action",
    ["outcome", "action"])


def count(outcome: str, action: str) -> None:
    if outcome in ("executed", "skipped", "failed"):
        ACTIONS_TOTAL.labels(outcome=outcome, action=action).inc()
