"""`fleetlog recommend` on a simulated store: NVIDIA's action for the diagnosed XID."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from fleetlog.analysis.sql import run_query
from fleetlog.cli.main import cli


def test_gsp_fault_gets_a_gpu_reset_and_rerun_adds_nothing(tmp_path: Path) -> None:
    db = tmp_path / "f.duckdb"
    runner = CliRunner()
    for args in (["simulate", "--nodes", "32", "--duration", "3h", "--seed", "3", "--scenario",
                  "gpu_gsp", "--to", f"duckdb:{db}"], ["analyze", "--db", str(db)]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["recommend", "--db", str(db)])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    gsp = [r for r in rows if r["catalog_action"] == "RESET_GPU"]
    assert gsp, rows
    assert all(r["action"] == "reset_gpu" and r["target"].startswith("gpu:") for r in gsp)
    stored = run_query([db], "SELECT count(*) FROM recommendations").rows[0][0]
    assert stored == len(rows)
    runner.invoke(cli, ["recommend", "--db", str(db)])
    assert run_query([db], "SELECT count(*) FROM recommendations").rows[0][0] == stored
