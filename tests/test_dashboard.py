"""The Grafana dashboard (docs/grafana/fleetlog.json) queries only metrics fleetlog exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import CollectorRegistry

from fleetlog.act.metrics import ActMetrics
from fleetlog.analysis.metrics import AnalysisMetrics
from fleetlog.ingest.metrics import IngestMetrics
from fleetlog.ingest.pipeline import IngestStats

DASHBOARD = Path(__file__).parents[1] / "docs" / "grafana" / "fleetlog.json"
SUFFIXES = ("_bucket", "_sum", "_count", "_total", "_created")


def _exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def _queried() -> set[str]:
    return {name for expr in _exprs() for name in re.findall(r"\bfleetlog_[a-z0-9_]+", expr)}


def _exported() -> set[str]:
    """Every sample name the ingest, analysis and act registries export, with data in them."""
    registry = CollectorRegistry()
    ingest = IngestMetrics(registry)
    stats = IngestStats(db="x", source="kafka:x", events=10, rows={"xid_raw": 10},
                        lag={"fleetlog.gpu[0]": 3})
    ingest.update(stats)
    analysis = AnalysisMetrics(registry)
    analysis.opened("gpu_hw", "warning", 12.0, 9.0)
    analysis.analysed(0.5)
    analysis.state({("gpu_hw", "warning"): 1}, 0.93, 1.7e9)
    ActMetrics(registry).attempted("executed", "drain_node")
    return {sample.name for family in registry.collect() for sample in family.samples}


def test_every_panel_has_a_query_and_the_dashboard_covers_each_area() -> None:
    exprs = _exprs()
    assert exprs and all(expr.strip() for expr in exprs)
    queried = _queried()
    for name in ("fleetlog_events_landed_total", "fleetlog_consumer_lag_records",
                 "fleetlog_dead_letters_total", "fleetlog_incidents_open",
                 "fleetlog_detection_latency_seconds_bucket", "fleetlog_fleet_goodput_ettr",
                 "fleetlog_actions_total"):
        assert name in queried, name


def test_every_metric_the_dashboard_queries_is_exported() -> None:
    exported = _exported()
    missing = sorted(_queried() - exported)
    assert missing == [], f"the dashboard queries metrics nobody exports: {missing}"
    # and the exported names are what the docs list
    docs = (Path(__file__).parents[1] / "docs" / "alerts-and-metrics.md").read_text()
    for name in exported:
        base = name
        for suffix in SUFFIXES:
            base = base.removesuffix(suffix)
        if not name.endswith("_created"):
            assert base in docs, f"{base} is exported but not in docs/alerts-and-metrics.md"
