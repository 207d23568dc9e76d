"""`fleetlog whatif` and the job-level recommendations on a small simulated llama3 store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from fleetlog.analysis.diagnosis import Incident
from fleetlog.analysis.job_history import US, JobHistory
from fleetlog.analysis.sql import run_query
from fleetlog.analysis.stored_incidents import StoredIncident
from fleetlog.analysis.whatif_data import failure_record
from fleetlog.cli.main import cli

pytestmark = pytest.mark.slow  # the module's store takes seconds to build


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("whatif") / "f.duckdb"
    runner = CliRunner()
    for args in (["simulate", "--nodes", "32", "--duration", "12h", "--seed", "4", "--scenario",
                  "llama3", "--fault-rate", "200", "--to", f"duckdb:{db}"],
                 ["analyze", "--db", str(db)]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, result.output
    return db


def test_whatif_orders_the_policies(store: Path) -> None:
    result = CliRunner().invoke(cli, ["whatif", "--db", str(store), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    by_policy = {row["policy"]: row for row in report["policies"]}
    assert list(by_policy) == ["baseline", "daly", "fleetlog", "oracle"]
    assert by_policy["oracle"]["ettr"] >= by_policy["fleetlog"]["ettr"] \
        >= by_policy["baseline"]["ettr"]
    assert by_policy["oracle"]["ettr_vs_oracle"] == 1.0
    inputs = report["inputs"]
    failed = run_query([store], "SELECT count(*) FROM job_events WHERE type = 'job.failed'")
    assert inputs["failures"] == failed.rows[0][0] > 0
    assert all(row["restarts"] == inputs["failures"] for row in by_policy.values())
    assert inputs["detected"] > 0 and inputs["matched_to_truth"] > 0
    expected = report["expected"]
    assert expected["periodic_loss_points"] > 0 and expected["gap_points"] == 2.0
    speedup = expected["checkpoint_speedup_for_gap"]
    assert speedup is None or speedup >= 1.0


def test_whatif_sizes_the_checkpoint_speedup_for_the_gap_asked(store: Path) -> None:
    reports = [json.loads(CliRunner().invoke(cli, ["whatif", "--db", str(store), "--gap", gap,
                                                   "--json"]).output)["expected"]
               for gap in ("0.5", "0.1")]
    assert reports[0]["periodic_loss_points"] == reports[1]["periodic_loss_points"]
    assert reports[0]["gap_points"] == 0.5
    assert 1.0 <= reports[0]["checkpoint_speedup_for_gap"] < reports[1][
        "checkpoint_speedup_for_gap"]


def test_whatif_table_and_one_policy(store: Path) -> None:
    result = CliRunner().invoke(cli, ["whatif", "--db", str(store), "--policy", "fleetlog",
                                      "--table"])
    assert result.exit_code == 0, result.output
    assert "fleetlog" in result.output and "baseline" not in result.output
    assert "points of ETTR in expectation" in " ".join(result.output.split())


def test_job_recommendations_target_jobs_and_rerun_adds_nothing(store: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["recommend", "--db", str(store)])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    jobs = [r for r in rows if r["target"].startswith("job:")]
    actions = {r["action"] for r in jobs}
    assert {"restart_from_checkpoint", "checkpoint_now", "set_checkpoint_interval"} <= actions
    failed = {f"job:{job}" for (job,) in run_query(
        [store], "SELECT DISTINCT job FROM job_events WHERE type = 'job.failed'").rows}
    restarts = [r for r in jobs if r["action"] in ("restart_from_checkpoint", "migrate_job")
                and " failed (" in r["reason"]]
    assert {r["target"] for r in restarts} <= failed
    # A swap (restart right after a checkpoint-now, without the suspect node) needs no failure.
    assert not [r for r in jobs if r["action"] == "restart_from_checkpoint" and r not in restarts]
    swaps = [r for r in jobs if r["action"] == "swap_node"]
    checkpointed = {r["target"] for r in jobs if r["action"] == "checkpoint_now"}
    assert all("once the checkpoint-now completes" in r["reason"] for r in swaps)
    assert {r["target"] for r in swaps} <= checkpointed
    assert any("leaving out suspect node(s) n" in r["reason"] for r in restarts)
    assert all(r["gpu_hours_saved"] >= 0 for r in jobs)
    assert any(r["gpu_hours_saved"] > 0 for r in jobs if r["action"] == "checkpoint_now")
    stored = run_query([store], "SELECT count(*) FROM recommendations WHERE target LIKE 'job:%'")
    assert stored.rows[0][0] == len(jobs)
    total = run_query([store], "SELECT count(*) FROM recommendations").rows[0][0]
    assert runner.invoke(cli, ["recommend", "--db", str(store)]).exit_code == 0
    assert run_query([store], "SELECT count(*) FROM recommendations").rows[0][0] == total


def _incident(category: str, root: str, start_s: int, detect_s: int, end_s: int,
              nodes: frozenset[str]) -> StoredIncident:
    incident = Incident(category=category, root=root, start_us=start_s * US,
                        detect_us=detect_s * US, end_us=end_s * US, candidates=[])
    return StoredIncident(incident, f"inc-{category}", frozenset({"e1"}), nodes)


def test_failure_records_from_the_store_model() -> None:
    h = JobHistory("j1", gpus=64, first_us=0, last_us=10_000 * US, placements=[(0, ("n1", "n2"))])
    crash, category = failure_record(h, 5_000 * US, "e1", explained=None, fault=None,
                                     last_step_us=4_400 * US, precursors=[])
    assert category == "unexplained" and not crash.implicit and crash.at_s == 5_000
    assert crash.detected_after_s is None and crash.warned_before_s == 0
    hang = _incident("nccl_hang", "job:j1", 4_400, 4_430, 5_000, frozenset())
    record, category = failure_record(h, 5_000 * US, "e1", explained=hang, fault=None,
                                      last_step_us=4_400 * US, precursors=[])
    assert category == "nccl_hang" and record.implicit
    assert (record.at_s, record.detected_after_s) == (4_400, 30)
    hbm = _incident("gpu_hbm", "gpu:n2/3", 2_000, 3_000, 5_000, frozenset({"n2"}))
    elsewhere = _incident("gpu_hbm", "gpu:n9/3", 1_000, 1_500, 5_000, frozenset({"n9"}))
    record, category = failure_record(h, 5_000 * US, "e1", explained=hbm, fault=None,
                                      last_step_us=4_990 * US, precursors=[hbm, elsewhere])
    assert not record.implicit and record.at_s == 5_000
    assert record.warned_before_s == 2_000


def test_work_at_risk_starts_at_the_last_checkpoint_or_restart() -> None:
    h = JobHistory("j1", gpus=8, first_us=0, last_us=9_000 * US, checkpoints=[1_000 * US],
                   placements=[(0, ("n1",)), (3_000 * US, ("n2",))])
    assert h.last_checkpoint_before(2_000 * US) == 1_000 * US
    assert h.last_checkpoint_before(4_000 * US) == 3_000 * US
    assert h.nodes_at(4_000 * US) == ("n2",)
