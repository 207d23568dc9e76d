"""The ingester's /metrics: its running counts, served over HTTP from a registry of its own."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner
from prometheus_client import CollectorRegistry

from fleetlog.cli.main import cli
from fleetlog.generators.config import SimConfig
from fleetlog.generators.run import simulate
from fleetlog.ingest.contract.metrics import MetricsError, parse_address, serve_metrics
from fleetlog.ingest.jsonl import ingest_jsonl
from fleetlog.ingest.metrics import IngestMetrics


def _scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        lines = response.read().decode().splitlines()
    return {name: float(value) for name, _, value in
            (line.rpartition(" ") for line in lines if line and not line.startswith("#"))}


def test_landing_counts_are_served_over_http(tmp_path: Path) -> None:
    simulate(SimConfig(nodes=4, hours=0.1, seed=1, scenario="gpu_hw"), f"jsonl:{tmp_path / 'j'}")
    with IngestMetrics.serving("127.0.0.1:0") as metrics:
        assert metrics.url is not None and metrics.url.startswith("http://127.0.0.1:")
        stats = ingest_jsonl(tmp_path / "j", tmp_path / "fleet.duckdb", progress=metrics.update)
        seen = _scrape(metrics.url)
    assert seen["fleetlog_events_landed_total"] == stats.events > 0
    assert seen["fleetlog_dead_letters_total"] == stats.dead_letters
    assert seen['fleetlog_rows_landed_total{table="gpu_samples_raw"}'] == stats.gpu_samples > 0
    assert seen["fleetlog_ingest_batches_total"] == stats.batches


def test_two_registries_in_one_process_do_not_meet() -> None:
    with IngestMetrics.serving("127.0.0.1:0") as one, IngestMetrics.serving("127.0.0.1:0") as two:
        assert one.url != two.url and one.registry is not two.registry


def test_a_port_in_use_or_not_a_port_is_a_one_line_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(MetricsError, match=f"cannot serve /metrics on 127.0.0.1:{port}"):
            serve_metrics(CollectorRegistry(), f"127.0.0.1:{port}")
    assert parse_address("9108") == ("0.0.0.0", 9108)
    with pytest.raises(MetricsError, match="is not a port"):
        parse_address("host:http")


@pytest.mark.parametrize("args, message", [
    (["analyze", "--metrics-port", "9108"], "--metrics-port serves /metrics while --follow"),
    (["analyze", "--no-write", "--alertmanager", "http://127.0.0.1:9093"],
     "--alertmanager needs the incidents stored"),
    (["ingest", "--from", "jsonl:x", "--metrics-port", "9108"],
     "--metrics-port serves /metrics while following Kafka"),
])
def test_metrics_and_alert_options_out_of_place_are_usage_errors(
        tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, [*args, "--db", str(tmp_path / "x.duckdb")])
    assert result.exit_code == 2, result.output
    assert message in result.output
