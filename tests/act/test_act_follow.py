"""``fleetlog act --follow``: recommendations published on ``<prefix>.analysis`` (by ``analyze
--publish`` and ``recommend --publish``) are carried out through a real Slurm as they land, every
attempt lands in act's own store, and ``/metrics`` counts them while it runs (scraped over
HTTP)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import duckdb
import pytest
from click.testing import CliRunner
from slurm_cluster import Slurm

from fleetlog.cli.main import cli
from fleetlog.ingest import contract as c

pytestmark = [pytest.mark.slow, pytest.mark.kafka]


def _analysis_events(store: Path) -> list[c.Envelope]:
    con = duckdb.connect(str(store), read_only=True)
    try:
        rows = con.execute(
            "SELECT event_id, type, v, epoch_us(ts), source, key, payload FROM event_log "
            "WHERE type IN ('incident.opened', 'recommendation.issued') ORDER BY ts").fetchall()
    finally:
        con.close()
    events = [c.decode_parts(i, t, v, ts, s, k, p.encode()) for i, t, v, ts, s, k, p in rows]
    assert all(isinstance(e, c.Envelope) for e in events)
    return events  # type: ignore[return-value]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as page:
            return str(page.read().decode())
    except OSError:
        return ""


def test_act_follow_drains_as_recommendations_land_and_serves_metrics(
        slurm: Slurm, gpu_hw_store: Path, tmp_path: Path, kafka_settings: Any,
        unique_name: Any) -> None:
    prefix = unique_name("act")
    store = tmp_path / "fleet.duckdb"
    shutil.copy(gpu_hw_store, store)
    drain_first = tmp_path / "drain-first.toml"
    drain_first.write_text("[escalation]\nreboot_after = 1\ndrain_after = 1\n"
                           "[circuit_breaker]\nmax_drain_share = 1.0\n")
    kafka = ["--bootstrap", kafka_settings.bootstrap, "--topic-prefix", prefix]
    runner = CliRunner()
    for argv in (["analyze", "--db", str(store), "--publish", *kafka],
                 ["recommend", "--db", str(store), "--remediation-config", str(drain_first),
                  "--publish",
                  *kafka]):
        result = runner.invoke(cli, argv)
        assert result.exit_code == 0, result.output
    events = _analysis_events(store)
    drains = [e for e in events if e.type == "recommendation.issued"
              and e.payload.action == "drain_node"]  # type: ignore[attr-defined]
    assert drains
    config = tmp_path / "remediation.toml"
    config.write_text("[circuit_breaker]\nmax_drain_share = 1.0\n")
    port = _free_port()
    db = tmp_path / "act.duckdb"
    fleetlog = shutil.which("fleetlog", path=str(Path(sys.executable).parent))
    assert fleetlog is not None
    proc = subprocess.Popen(
        [fleetlog, "act", "--follow", "--db", str(db), "--execute", "--slurm-conf",
         str(slurm.conf), "--remediation-config", str(config), "--metrics-port", str(port),
         "--bootstrap", kafka_settings.bootstrap, "--topic-prefix", prefix,
         "--until-idle", "5s", "--max-time", "120s"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wanted = f'fleetlog_actions_total{{action="drain_node",outcome="executed"}} {len(drains)}.0'
        deadline = time.monotonic() + 90
        page = ""
        while wanted not in page and proc.poll() is None and time.monotonic() < deadline:
            page = _scrape(port)
            time.sleep(0.2)
        assert wanted in page, page[-2000:]
        assert "# TYPE fleetlog_actions_total counter" in page
        _out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    drained = {e.payload.target.removeprefix("node:") for e in drains}  # type: ignore[attr-defined]
    for node in drained:
        state, reason = slurm.node(node)
        assert state.rstrip("*") == "drained" and reason.startswith("fleetlog inc-")
    con = duckdb.connect(str(db), read_only=True)
    try:
        kinds = con.execute("SELECT type, count(*) FROM event_log WHERE type LIKE 'action.%' "
                            "GROUP BY type").fetchall()
    finally:
        con.close()
    recommendations = sum(e.type == "recommendation.issued" for e in events)
    assert sum(n for _t, n in kinds) == recommendations  # every attempt landed, once
    assert dict(kinds)["action.executed"] == len(drains)
