"""``act --follow``'s Prometheus metrics, in a registry of its own (served the kernel's one way,
``ingest.contract.metrics.serve_metrics``).

| metric | type | labels | what |
|---|---|---|---|
| ``fleetlog_actions_total`` | counter | ``outcome``, ``action`` | attempts: ``executed``, ``skipped`` or ``failed`` (a dry run's planned actions are not counted) |

The name and labels are fixed: the Grafana dashboard (docs/grafana/fleetlog.json) queries them.
"""  # noqa: E501

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

OUTCOMES = ("executed", "skipped", "failed")


class ActMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.actions = Counter("fleetlog_actions", "Actions fleetlog act attempted, by outcome "
                               "and action.", ["outcome", "action"], registry=registry)

    def attempted(self, outcome: str, action: str) -> None:
        if outcome in OUTCOMES:
            self.actions.labels(outcome=outcome, action=action).inc()
