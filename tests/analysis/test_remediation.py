"""Component actions: NVIDIA's catalog first, escalation, rack-level action, circuit breaker."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetlog.analysis.config_file import ConfigError
from fleetlog.analysis.remediation import (
    CATALOG_ACTIONS,
    CircuitBreaker,
    Failure,
    RemediationConfig,
    catalog_action,
    plan,
)
from fleetlog.ingest.store import load_xid_catalog


def test_every_catalog_xid_gets_the_catalogs_action() -> None:
    """100% agreement: the first action for each XID is the one NVIDIA's catalog names."""
    catalog = load_xid_catalog()
    agreed = 0
    for xid, _name, action, _fatal in catalog:
        ours, _level, theirs = catalog_action(xid)
        assert theirs == action
        if action in CATALOG_ACTIONS:
            assert ours == CATALOG_ACTIONS[action][0]
            agreed += 1
        else:
            # Only the free-text "follow guidance of another Xid" row has no direct action.
            assert action.startswith("Follow guidance"), action
            assert ours == "report_issue"
            agreed += 1
    assert agreed == len(catalog)


def test_first_xid_79_reboots_the_node() -> None:
    [action] = plan([Failure(0, "gpu_hw", "gpu:n1/3", node="n1", rack="r1", xid=79)],
                    fleet_nodes=100)
    assert (action.target, action.action, action.catalog_action) == (
        "node:n1", "reboot_node", "RESTART_BM")


def test_recurrence_escalates_reset_then_reboot_then_drain_then_rma() -> None:
    failures = [Failure(i * 600.0, "gpu_hbm", "gpu:n1/2", node="n1", rack="r1", xid=48)
                for i in range(4)]
    actions = plan(failures, fleet_nodes=1000)
    assert [a.action for a in actions] == ["reset_gpu", "reboot_node", "drain_node", "rma"]
    assert actions[0].target == "gpu:n1/2"
    assert actions[1].target == "node:n1"
    assert "escalated from reset_gpu to reboot_node" in actions[1].reason


def test_failures_outside_the_window_do_not_escalate() -> None:
    failures = [Failure(i * 2 * 86400.0, "gpu_gsp", "gpu:n1/0", node="n1", xid=119)
                for i in range(3)]
    assert [a.action for a in plan(failures, fleet_nodes=10)] == ["reset_gpu"] * 3


def test_xid_43_needs_three_in_ten_minutes() -> None:
    spread = [Failure(t, "software", "gpu:n1/0", node="n1", xid=43) for t in (0, 400, 900)]
    assert plan(spread, fleet_nodes=10) == []
    burst = [Failure(t, "software", "gpu:n1/0", node="n1", xid=43) for t in (0, 100, 200)]
    [action] = plan(burst, fleet_nodes=10)
    assert action.action == "reset_gpu"
    assert "XID 43 seen 3 times" in action.reason


def test_several_nodes_of_one_rack_trigger_a_rack_action() -> None:
    failures = [Failure(10.0 * i, "host_hw", f"node:n{i}", node=f"n{i}", rack="r7")
                for i in range(3)]
    actions = plan(failures, fleet_nodes=100)
    assert any(a.target == "rack:r7" and a.action == "check_rack_power" for a in actions)


def test_circuit_breaker_caps_drains() -> None:
    failures = [Failure(float(i), "host_hw", f"node:n{i}", node=f"n{i}") for i in range(5)]
    config = RemediationConfig(circuit_breaker=CircuitBreaker(max_drain_share=0.05))
    actions = plan(failures, fleet_nodes=40, config=config)
    assert [a.action for a in actions] == ["drain_node", "drain_node", "hold_for_human",
                                           "hold_for_human", "hold_for_human"]
    assert "circuit breaker" in actions[2].reason


def test_config_file(tmp_path: Path) -> None:
    path = tmp_path / "remediation.toml"
    path.write_text("[escalation]\nreboot_after = 5\n[circuit_breaker]\nmax_drain_share = 0.5\n"
                    "[[xid_threshold]]\nxid = 13\ncount = 2\nwindow_s = 60\n"
                    "action = \"restart_app\"\n")
    config = RemediationConfig.load(path)
    assert (config.escalation.reboot_after, config.circuit_breaker.max_drain_share) == (5, 0.5)
    assert config.xid_threshold[0].xid == 13
    with pytest.raises(ConfigError, match="cannot read config file"):
        RemediationConfig.load(tmp_path / "missing.toml")
