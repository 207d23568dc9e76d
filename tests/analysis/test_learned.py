"""The learned detector (issue #19): its model follows scikit-learn's rules, its features are
peer-relative, and it names the slow part, on a hand-made cluster and on a simulated fail-slow
run. The seeds here are not the bench's (bench/learned_eval.py: 801-805)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
from click.testing import CliRunner
from fleet_builders import Cluster, job
from readers_support import capture
from test_real_captures import HEALTHY

from fleetlog.analysis.context import build_context
from fleetlog.analysis.detectors import DETECTORS, OPTIONAL_DETECTORS
from fleetlog.analysis.detectors.learned import _episodes, build_model, outlier_rows
from fleetlog.analysis.diagnosis import Incident
from fleetlog.analysis.evaluate import evaluate_stores
from fleetlog.analysis.features import gpu_features, node_features
from fleetlog.analysis.pipeline import analyze_store
from fleetlog.cli.main import cli
from fleetlog.generators.config import SimConfig
from fleetlog.generators.run import simulate
from fleetlog.ingest.store import open_store
from fleetlog.ingest.store.writer import land

SLOW_NODE = 2  # every GPU of it slower (a power cap): an outlier only against the job's nodes
SLOW_GPU = (5, 3)  # one GPU slower than the seven others of its node


def _slow_cluster() -> Cluster:
    cluster = Cluster(nodes=8, scrapes=120)

    def slow(s: int, node: str, gpu: int, values: dict[str, float]) -> bool:
        if node == cluster.name(SLOW_NODE):
            values["sm_clock_mhz"], values["power_w"] = 1700.0, 500.0
        if (node, gpu) == (cluster.name(SLOW_GPU[0]), SLOW_GPU[1]) and s >= 30:
            values["sm_clock_mhz"], values["power_w"] = 1400.0, 450.0
        return True

    cluster.hooks.append(slow)
    job(cluster, "j1", list(range(8)))
    return cluster


def _incidents(cluster: Cluster, db: Path, optional: tuple[str, ...]) -> list[Incident]:
    land(db, cluster.build())
    con = open_store(db)
    try:
        return analyze_store(con, optional=optional).incidents
    finally:
        con.close()


def test_model_is_deterministic_with_its_random_state() -> None:
    rng = np.random.default_rng(0)
    x = np.abs(rng.normal(0, 1, size=(500, 4)))
    x[0] = [30.0, 25.0, 0.0, 0.0]
    first = build_model(random_state=3).fit(x).score_samples(x)
    again = build_model(random_state=3).fit(x).score_samples(x)
    assert first.shape == (500,)
    assert np.array_equal(first, again)
    assert build_model(random_state=3).fit(x).predict(x).shape == (500,)
    assert int(np.argmin(first)) == 0  # the far row scores lowest (most anomalous)
    assert build_model().get_params()["forest__contamination"] == "auto"


def test_outlier_rows_flags_only_the_far_row() -> None:
    rng = np.random.default_rng(1)
    values = np.abs(rng.normal(0, 0.5, size=(2000, 3)))
    values[7] = [12.0, 9.0, 0.0]
    frame = pl.DataFrame(values, schema=["a", "b", "c"], orient="row").with_row_index("id")
    flagged = outlier_rows(frame, ["a", "b", "c"])
    assert flagged["id"].to_list() == [7]
    assert flagged["score"][0] < -0.5
    assert outlier_rows(frame.head(0), ["a", "b", "c"]).is_empty()


def test_features_are_peer_relative(tmp_path: Path) -> None:
    cluster = _slow_cluster()
    db = tmp_path / "fleet.duckdb"
    land(db, cluster.build())
    con = open_store(db)
    try:
        ctx = build_context(con, None, None)
        assert ctx is not None
        gpus = gpu_features(ctx)
        nodes = node_features(ctx)
    finally:
        con.close()
    slow_node = cluster.name(SLOW_NODE)
    # A uniformly slower node: its GPUs are not outliers against each other...
    same = gpus.filter(pl.col("node") == slow_node)
    assert same["clock_low"].max() == 0.0 and same["power_low"].max() == 0.0
    # ...but the node is one against the other nodes of its job.
    assert nodes.filter(pl.col("node") == slow_node)["node_clock_low"].min() > 3.0
    assert nodes.filter(pl.col("node") != slow_node)["node_power_low"].max() == 0.0
    # One slow GPU is an outlier against its node's GPUs, once it slows (window 3 on).
    node, gpu = cluster.name(SLOW_GPU[0]), SLOW_GPU[1]
    one = gpus.filter((pl.col("node") == node) & (pl.col("gpu") == gpu)).sort("bucket")
    assert one["clock_low"][-1] > 3.0 and one["power_low"][-1] > 3.0
    assert one["clock_low"][0] == 0.0
    others = gpus.filter((pl.col("node") == node) & (pl.col("gpu") != gpu))
    assert others["clock_low"].max() == 0.0


def test_learned_names_the_slow_gpu_and_node_only_when_asked(tmp_path: Path) -> None:
    assert "learned" in OPTIONAL_DETECTORS and "learned" not in DETECTORS
    cluster = _slow_cluster()
    found = {(i.category, i.root) for i in _incidents(cluster, tmp_path / "a.duckdb",
                                                      ("learned",))}
    assert found == {("gpu_hw", "gpu:n00006/3"), ("host_hw", "node:n00003")}
    learned = next(i for i in _incidents(_slow_cluster(), tmp_path / "b.duckdb", ("learned",))
                   if i.root == "gpu:n00006/3")
    evidence = next(f for f in learned.findings if f.kind == "gpu_outlier")
    assert set(evidence.attrs["features"]) >= {"clock_low", "power_low"}
    assert evidence.attrs["score"] < -0.5
    # without --learned no outlier finding is made (the peer rules may name the same parts)
    rules_only = _incidents(_slow_cluster(), tmp_path / "c.duckdb", ())
    assert not [f for i in rules_only for f in i.findings if f.kind.endswith("_outlier")]


def test_flags_the_right_gpu_on_a_simulated_failslow_run(tmp_path: Path) -> None:
    db = tmp_path / "failslow.duckdb"
    simulate(SimConfig(nodes=16, hours=2.0, seed=47, scenario="failslow_clock_drop"),
             f"duckdb:{db}")
    report = evaluate_stores([[str(db)]], optional=("learned",))
    assert report["faults"] >= 1
    assert report["recall"] == 1.0, report["missed"]
    assert report["overall"]["ac1"] == 1.0, report["wrong_root"]
    assert report["false_alarms"] == 0 and report["duplicates"] == 0, (
        report["false_alarm_examples"])


def test_analyze_learned_option(tmp_path: Path) -> None:
    db = tmp_path / "fleet.duckdb"
    land(db, _slow_cluster().build())
    runner = CliRunner()
    result = runner.invoke(cli, ["analyze", "--db", str(db), "--learned", "--no-write", "--json"])
    assert result.exit_code == 0, result.output
    roots = {row["root_entity"] for row in json.loads(result.output)["opened"]}
    assert roots == {"gpu:n00006/3", "node:n00003"}
    plain = runner.invoke(cli, ["analyze", "--db", str(db), "--no-write", "--json"])
    assert plain.exit_code == 0, plain.output  # the peer rules name no other part
    assert {row["root_entity"] for row in json.loads(plain.output)["opened"]} <= roots
    follow = runner.invoke(cli, ["analyze", "--db", str(db), "--learned", "--follow"])
    assert follow.exit_code == 2 and "--learned runs in batch analysis only" in follow.output


def test_healthy_real_captures_stay_silent_with_learned(tmp_path: Path) -> None:
    """Real snapshots (one node, one scrape each, a few GPUs): no peer group of MIN_PEERS in a
    window over a steady series, so nothing to call an outlier."""
    db = tmp_path / "healthy.duckdb"
    runner = CliRunner()
    for relative, options in HEALTHY:
        imported = runner.invoke(cli, ["import", "--to", f"duckdb:{db}", *options,
                                       str(capture(relative)), "--json"])
        assert imported.exit_code == 0, imported.output
    result = runner.invoke(cli, ["analyze", "--db", str(db), "--learned", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["incidents"] == 0


def test_episodes_need_consecutive_outlier_windows() -> None:
    assert _episodes(np.array([5])) == []  # one window: a blip
    assert _episodes(np.array([5, 7, 9])) == []  # never two in a row
    assert _episodes(np.array([5, 6, 7, 12, 13])) == [(0, 1, 2), (3, 4, 4)]
    assert _episodes(np.array([5, 7, 8, 10])) == [(0, 2, 3)]  # gaps of one window join


def test_explain_recovers_a_learned_incident_with_its_features(tmp_path: Path) -> None:
    db = tmp_path / "fleet.duckdb"
    land(db, _slow_cluster().build())
    runner = CliRunner()
    analyzed = runner.invoke(cli, ["analyze", "--db", str(db), "--learned", "--json"])
    gpu = next(row for row in json.loads(analyzed.output)["opened"]
               if row["root_entity"] == "gpu:n00006/3")
    explained = runner.invoke(cli, ["explain", "--db", str(db), gpu["incident_id"]])
    assert explained.exit_code == 0, explained.output
    # the peer rules name the same GPU now (explain tells their story); either way a part that
    # is only slower than its peers takes no capacity away
    assert "gpu:n00006/3" in explained.output
    assert "Investigate" in explained.output
