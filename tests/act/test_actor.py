"""The parts of ``act`` that need no scheduler: ids, names, the suspect nodes a job action
leaves out, the policy's config, the action events through the contract and the store, and the
one-line messages when Slurm is absent or unreachable."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from fleetlog.act.actor import ActPolicy, NameMap, action_id, suspect_nodes
from fleetlog.act.slurm import SlurmBackend
from fleetlog.act.source import Recommendation, load_attempts
from fleetlog.analysis.config_file import ConfigError
from fleetlog.cli.main import cli
from fleetlog.ingest import contract as c
from fleetlog.ingest.store import open_store
from fleetlog.ingest.store.sink import StoreSink

EXAMPLE_CONFIG = Path(__file__).resolve().parents[2] / "docs" / "examples" / "remediation.toml"


def _rec(reason: str, root: str = "") -> Recommendation:
    return Recommendation(id="r1", incident_id="inc-1", time_us=0, target="job:j1",
                          action="restart_from_checkpoint", reason=reason, root_entity=root)


def test_action_ids_are_deterministic_and_distinct() -> None:
    assert action_id("r1", "drain_node") == action_id("r1", "drain_node")
    assert action_id("r1", "drain_node") != action_id("r2", "drain_node")
    assert action_id("r1", "drain_node") != action_id("r1", "reboot_node")
    assert action_id("r1", "drain_node").startswith("act-")


def test_suspect_nodes_come_from_the_reason_else_the_incident_root() -> None:
    assert suspect_nodes(_rec("job j1 failed: restart ..., leaving out suspect node(s) n00005"
                              )) == ["n00005"]
    assert suspect_nodes(_rec("restart from it on a spare node, leaving out suspect node(s) "
                              "n1, n2, before the failure reaches it (warnings led ...)"
                              )) == ["n1", "n2"]
    assert suspect_nodes(_rec("restart ... leaving out suspect node(s) n3; it needs 4")) == ["n3"]
    assert suspect_nodes(_rec("on its nodes: no node is suspect", "gpu:n7/3")) == ["n7"]
    assert suspect_nodes(_rec("on its nodes: no node is suspect", "switch:leaf1")) == []


def test_the_name_map_is_explicit_and_the_identity_otherwise(tmp_path: Path) -> None:
    path = tmp_path / "names.toml"
    path.write_text('[nodes]\nn00001 = "gpu-a-001"\n[jobs]\nj0001 = "4242"\n'
                    '[partitions]\nvc1 = "batch-b"\n')
    names = NameMap.load(path)
    assert (names.node("n00001"), names.node("n00002")) == ("gpu-a-001", "n00002")
    assert (names.job("j0001"), names.partition("vc1")) == ("4242", "batch-b")
    assert NameMap.load(None).node("x") == "x"


def test_the_policy_reads_the_remediation_configs_breaker_and_budget(tmp_path: Path) -> None:
    path = tmp_path / "remediation.toml"
    path.write_text("[circuit_breaker]\nmax_drain_share = 0.1\nwindow_s = 600\n"
                    "[actions]\nmax_per_node = 2\nwindow_s = 7200\n")
    policy = ActPolicy.load(path, execute=True)
    assert (policy.max_drain_share, policy.breaker_window_s) == (0.1, 600.0)
    assert (policy.max_per_target, policy.budget_window_s, policy.execute) == (2, 7200.0, True)
    assert ActPolicy.load(None).execute is False  # a dry run unless told


def test_action_events_round_trip_and_land_in_the_event_log(tmp_path: Path) -> None:
    common = {"action_id": "act-1", "recommendation_id": "r1", "incident_id": "inc-1",
              "action": "drain_node", "target": "node:n1", "backend": "slurm",
              "command": "scontrol update NodeName=n1 State=DRAIN 'Reason=fleetlog inc-1: x'"}
    events = [c.make_event(p, time_us=1_800_000_000_000_000, source="fleetlog-act", id=f"e{i}")
              for i, p in enumerate((c.ActionExecuted(**common, verified=True),
                                     c.ActionSkipped(**common, why="budget"),
                                     c.ActionFailed(**common, error="Invalid node name")))]
    for event in events:
        assert c.decode(c.encode(event)) == event
        assert event.topic_family == "analysis" and event.key == "node:n1"
    db = tmp_path / "fleet.duckdb"
    sink = StoreSink.open(db)
    sink.write(events)
    sink.write(events)  # the same attempts again: nothing new
    sink.close()
    assert (sink.totals.events, sink.totals.duplicates) == (3, 3)
    con = open_store(db, read_only=True)
    try:
        attempts = load_attempts(con)
    finally:
        con.close()
    assert sorted(a.outcome for a in attempts) == ["executed", "failed", "skipped"]
    raw = duckdb.connect(str(db), read_only=True)
    try:
        rows = raw.execute("SELECT type, payload FROM event_log WHERE type LIKE 'action.%' "
                           "ORDER BY type").fetchall()
    finally:
        raw.close()
    assert [(t, json.loads(p).get("verified", json.loads(p).get("why", json.loads(p).get(
        "error")))) for t, p in rows] == [("action.executed", True), ("action.failed",
                                                                      "Invalid node name"),
                                          ("action.skipped", "budget")]


def test_without_scontrol_act_says_so_in_one_line(tmp_path: Path) -> None:
    db = tmp_path / "fleet.duckdb"
    sink = StoreSink.open(db)
    sink.write([c.make_event(c.RecommendationIssued(
        incident_id="inc-1", target="node:n1", action="drain_node", reason="x"),
        time_us=1_800_000_000_000_000, source="test")])
    sink.close()
    empty = tmp_path / "bin"
    empty.mkdir()
    result = CliRunner().invoke(cli, ["act", "--db", str(db)], env={"PATH": str(empty)})
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: sinfo not found: install Slurm's client tools (apt-get install slurm-client) "
        "or use a dry run elsewhere"]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("sinfo") is None,
                    reason="Slurm's client tools are not installed (`make test` installs them)")
def test_an_unreachable_slurmctld_is_one_line(tmp_path: Path) -> None:
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=x\nSlurmctldHost=localhost(127.0.0.1)\nSlurmctldPort=9\n"
                    f"AuthType=auth/munge\nAuthInfo=socket={tmp_path}/no-munge\n"
                    "NodeName=n1 CPUs=1\nPartitionName=p Nodes=ALL\n")
    with pytest.raises(c.FleetlogError, match=r"^slurmctld unreachable"):
        SlurmBackend(str(conf)).node_state("n1")


# Issue #22: act's config files are checked against their schema.

def test_act_reads_its_budget_from_the_same_schema(tmp_path: Path) -> None:
    config = tmp_path / "remediation.toml"
    config.write_text("[actions]\nmax_per_nod = 2\n")
    with pytest.raises(ConfigError, match=r":2: unknown key 'max_per_nod' in \[actions\]"):
        ActPolicy.load(config)
    assert ActPolicy.load(EXAMPLE_CONFIG) == ActPolicy()


def test_the_name_map_is_checked_too(tmp_path: Path) -> None:
    path = tmp_path / "names.toml"
    path.write_text('[nodes]\nn00001 = "gpu-a-001"\n[job]\nj0001 = "4242"\n')
    with pytest.raises(ConfigError, match=r"names.toml:3: unknown table \[job\] "
                                          r"\(did you mean \[jobs\]\?\)"):
        NameMap.load(path)
    path.write_text('[nodes]\nn00001 = ["gpu-a-001"]\n')
    with pytest.raises(ConfigError, match=r":2: 'n00001' in \[nodes\] must be a string or an "
                                          r"integer, not an array"):
        NameMap.load(path)
    path.write_text("[jobs]\nj0001 = 4242\n")  # a Slurm job id may be written as a number
    assert NameMap.load(path).job("j0001") == "4242"
