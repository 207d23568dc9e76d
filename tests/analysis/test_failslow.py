"""Fail-slow (gray) faults and counter rates (issue #19): each fail-slow kind found and
localized on its simulated scenario; on a hand-made cluster, a GPU slower than its node's
peers, a node held under its job's other nodes, a port error trickle over an hour found, an
isolated counter blip ignored, and a slowed job that no hardware explains reported as such."""

from __future__ import annotations

from pathlib import Path

import pytest
from fleet_builders import Cluster, analyze_cluster, job, only

from fleetlog.analysis.evaluate import evaluate_stores
from fleetlog.generators.config import SimConfig
from fleetlog.generators.run import simulate
from fleetlog.ingest import contract as c

SEED = 11  # the figures (bench/failslow.py, docs/analysis.md) use seeds 701-705
KINDS = ("clock_drop", "power_cap", "pcie_degraded", "port_bandwidth", "nvlink_bandwidth",
         "node_network")


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_each_failslow_kind_found_and_localized(tmp_path: Path, kind: str) -> None:
    db = tmp_path / f"{kind}.duckdb"
    simulate(SimConfig(nodes=32, hours=3.0, seed=SEED, scenario=f"failslow_{kind}"),
             f"duckdb:{db}")
    report = evaluate_stores([[str(db)]])
    scores = report["by_kind"][kind]
    assert scores["faults"] == 3
    assert scores["recall"] == 1.0, report["missed"]
    assert scores["ac1"] == 1.0, report["wrong_root"]
    assert report["false_alarms"] == 0 and report["duplicates"] == 0, (
        report["false_alarm_examples"])


def test_gpu_slower_than_its_node_peers(db_path: Path) -> None:
    cluster = Cluster(scrapes=90)
    job(cluster, "j1", list(range(8)))

    def slow(s: int, n: str, g: int, v: dict[str, float]) -> bool:
        if n == "n00003" and g == 5 and s >= 40:  # no throttle bit, util stays high
            v["sm_clock_mhz"] *= 0.7
            v["power_w"] *= 0.72
        return True

    cluster.hooks.append(slow)
    incident = only(analyze_cluster(cluster, db_path))
    assert (incident.category, incident.root) == ("gpu_hw", "gpu:n00003/5")
    assert "gpu_slow" in {f.kind for f in incident.findings}


def test_node_under_a_power_cap_against_its_job(db_path: Path) -> None:
    cluster = Cluster(scrapes=90)
    job(cluster, "j1", list(range(8)))

    def capped(s: int, n: str, g: int, v: dict[str, float]) -> bool:
        if n == "n00006" and s >= 30:  # every GPU of it: no GPU stands out within the node
            v["power_w"] = 400.0
            v["sm_clock_mhz"] *= 0.85
        return True

    cluster.hooks.append(capped)
    incident = only(analyze_cluster(cluster, db_path))
    assert (incident.category, incident.root) == ("host_hw", "node:n00006")
    assert "node_slow" in {f.kind for f in incident.findings}


def test_isolated_counter_blip_raises_nothing(db_path: Path) -> None:
    cluster = Cluster(scrapes=120)
    job(cluster, "j1", [0, 1, 2, 3])

    def blip(s: int, sw: str, port: int, v: dict[str, float]) -> None:
        if sw == "leaf-su01-2" and port == 3 and s >= 50:
            v["symbol_error"] = 28.0  # one jump, never rising again
        if sw == "leaf-su01-5" and port == 1 and s >= 70:
            v["rcv_errors"] = 9.0

    cluster.port_hooks.append(blip)
    assert analyze_cluster(cluster, db_path) == []


def test_error_trickle_over_an_hour_is_found(db_path: Path) -> None:
    cluster = Cluster(nodes=4, scrapes=420)  # 70 minutes
    job(cluster, "j1", [0, 1, 2, 3])

    def trickle(s: int, sw: str, port: int, v: dict[str, float]) -> None:
        if sw == "leaf-su01-6" and port == 2:
            v["rcv_errors"] = float(s // 40)  # one every ~7 minutes: ~9 an hour

    cluster.port_hooks.append(trickle)
    incident = only(analyze_cluster(cluster, db_path))
    assert incident.root in ("nic:n00002/6", "link:leaf-su01-6/2")
    assert "rcv_errors" in {f.kind for f in incident.findings}


def test_straggler_no_hardware_explains_is_a_job_incident(db_path: Path) -> None:
    cluster = Cluster(nodes=4, scrapes=90)
    names = [cluster.name(n) for n in range(4)]
    t = cluster.t
    cluster.add(c.JobSubmitted(job="j1", gpus=32, vcluster="vc0"), t(0) - 10)
    cluster.add(c.JobPlaced(job="j1", nodes=names, vcluster="vc0"), t(0) - 9)
    cluster.add(c.JobStarted(job="j1", step=0), t(0) - 8)
    for s in range(90):  # steps 40 % slower from step 50, every GPU as healthy as before
        cluster.add(c.JobStepReported(job="j1", step=s + 1, step_time_s=14.0 if s >= 50 else 10.0,
                                      tokens_per_s=1e6, loss=2.0), t(s) + 5_000_000)
    incident = only(analyze_cluster(cluster, db_path))
    assert (incident.category, incident.root) == ("software", "job:j1")
    assert any("no hardware" in f.text for f in incident.findings)
    assert not any(cat in ("gpu_hw", "host_hw", "network", "nic")
                   for cat, _e, _s in incident.candidates[:1])


def test_nvlink_crc_trickle_over_an_hour_is_found(db_path: Path) -> None:
    cluster = Cluster(nodes=4, scrapes=420)  # 70 minutes
    job(cluster, "j1", [0, 1, 2, 3])

    def trickle(s: int, n: str, g: int, v: dict[str, float]) -> bool:
        if n == "n00003" and g == 4:
            v["nvlink_crc_flit_errors"] = float(s // 36)  # one every 6 minutes: 10 an hour
        if n == "n00001" and g == 2 and s >= 100:
            v["nvlink_crc_flit_errors"] = 12.0  # one jump, never again: a blip
        return True

    cluster.hooks.append(trickle)
    incident = only(analyze_cluster(cluster, db_path))
    assert (incident.category, incident.root) == ("gpu_hw", "gpu:n00003/4")
    assert "nvlink_rising" in {f.kind for f in incident.findings}
