"""Diagnosis on a hand-made cluster: each test bends one signal the way docs/faults.md says the
fault shows, and checks the category and root entity that come out on top."""

from __future__ import annotations

from pathlib import Path

import pytest
from fleet_builders import Cluster, analyze_cluster, job, only

from fleetlog.ingest import contract as c


def test_healthy_cluster_has_no_incident(db_path: Path) -> None:
    cluster = Cluster()
    job(cluster, "j1", [0, 1, 2, 3])
    cluster.add(c.XidReported(node="n00001", gpu=2, xid=13), cluster.t(30))  # benign, alone
    assert analyze_cluster(cluster, db_path) == []


def test_gpu_off_the_bus(db_path: Path) -> None:
    cluster = Cluster()
    cluster.hooks.append(lambda s, n, g, v: not (n == "n00002" and g == 3 and s >= 50))
    cluster.add(c.XidReported(node="n00002", gpu=3, xid=79), cluster.t(49) + 3_000_000)
    job(cluster, "j1", [0, 1, 2, 3], fail_at=52, reason="CUDA error: unspecified launch failure")
    incident = only(analyze_cluster(cluster, db_path))
    assert (incident.category, incident.root) == ("gpu_hw", "gpu:n00002/3")
    assert {"xid", "gpu_absent", "job_failed"} <= {f.kind for f in incident.findings}
    assert "job:j1" in incident.affected


def test_hbm_precursors_then_dbe(db_path: Path) -> None:
    cluster = Cluster()

    def hbm(s: int, n: str, g: int, v: dict[str, float]) -> bool:
        if n == "n00005" and g == 6 and s >= 40:
            v["ecc_sbe_vol_total"] = float((s - 40) * 2)
            v["row_remap_pending"] = 1.0 if s >= 60 else 0.0
            v["ecc_dbe_vol_total"] = 1.0 if s >= 90 else 0.0
        return True

    cluster.hooks.append(hbm)
    cluster.add(c.XidReported(node="n00005", gpu=6, xid=48), cluster.t(90) + 1)
    incident = only(analyze_cluster(cluster, db_path))
    assert (incident.category, incident.root) == ("gpu_hbm", "gpu:n00005/6")
    assert incident.start_us == cluster.t(41)  # the first SBE increase
    assert incident.detect_us < cluster.t(90)  # said before the DBE


def test_node_stops_reporting(db_path: Path) -> None:
    cluster = Cluster()
    cluster.hooks.append(lambda s, n, g, v: not (n == "n00003" and s >= 70))
    cluster.add(c.NodeWentDown(node="n00003", reason="unreachable"), cluster.t(77))
    incident = only(analyze_cluster(cluster, db_path))
    assert (incident.category, incident.root) == ("host_hw", "node:n00003")
    assert incident.detect_us == cluster.t(71)  # second missed scrape


def test_rack_loses_power(db_path: Path) -> None:
    cluster = Cluster()
    cluster.hooks.append(lambda s, n, g, v: not (n in ("n00005", "n00006", "n00007", "n00008")
                                                 and s >= 60))
    for n in ("n00005", "n00006", "n00007", "n00008"):
        cluster.add(c.NodeWentDown(node=n, reason="power loss"), cluster.t(62))
    incident = only(analyze_cluster(cluster, db_path))
    assert (incident.category, incident.root) == ("rack_power", "rack:r0002")


def test_leaf_switch_down(db_path: Path) -> None:
    cluster = Cluster()

    def leaf(s: int, sw: str, port: int, v: dict[str, float]) -> None:
        if sw == "leaf-su01-2" and s >= 80:
            v["link_state"] = 1.0
            v["link_downed"] = 1.0

    cluster.port_hooks.append(leaf)
    job(cluster, "j1", [0, 1, 2, 3], fail_at=81, reason="NCCL error: network error")
    incident = only(analyze_cluster(cluster, db_path))
    assert (incident.category, incident.root) == ("network", "switch:leaf-su01-2")
    assert "job:j1" in incident.affected


def test_flapping_cable(db_path: Path) -> None:
    cluster = Cluster()

    def cable(s: int, sw: str, port: int, v: dict[str, float]) -> None:
        if sw == "leaf-su01-4" and port == 2 and s >= 30:
            v["symbol_error"] = float((s - 30) * 5)
            v["link_error_recovery"] = float((s - 30) // 4)
            if s in (60, 61, 70, 71):
                v["link_state"] = 1.0
            v["link_downed"] = float((s >= 60) + (s >= 70))

    cluster.port_hooks.append(cable)
    incident = only(analyze_cluster(cluster, db_path))
    assert (incident.category, incident.root) == ("network", "link:leaf-su01-4/2")


def test_nic_errors_then_down_for_good(db_path: Path) -> None:
    cluster = Cluster()

    def nic(s: int, sw: str, port: int, v: dict[str, float]) -> None:
        if sw == "leaf-su01-1" and port == 7 and s >= 30:
            v["rcv_errors"] = float((s - 30) * 10)
            if s >= 60:
                v["link_state"] = 1.0
                v["link_downed"] = 1.0

    cluster.port_hooks.append(nic)
    incident = only(analyze_cluster(cluster, db_path))
    assert (incident.category, incident.root) == ("nic", "nic:n00007/1")


@pytest.mark.parametrize(("kwargs", "category"), [
    ({"fail_at": 60, "exit_code": 1, "reason": "ImportError: no module named apex"},
     "software"),
    ({"steps_until": 50, "fail_at": 110, "exit_code": -6, "reason": "NCCL watchdog timeout"},
     "nccl_hang"),
    ({"loss_nan_at": 55, "fail_at": 58, "reason": "loss is NaN"}, "sdc"),
])
def test_job_faults_without_hardware(db_path: Path, kwargs: dict, category: str) -> None:
    cluster = Cluster()
    job(cluster, "j7", [4, 5, 6, 7], **kwargs)
    incident = only(analyze_cluster(cluster, db_path))
    assert (incident.category, incident.root) == (category, "job:j7")


def test_nccl_hang_is_detected_before_the_watchdog(db_path: Path) -> None:
    cluster = Cluster()
    job(cluster, "j7", [4, 5, 6, 7], steps_until=50, fail_at=110, exit_code=-6,
        reason="NCCL watchdog timeout")
    incident = only(analyze_cluster(cluster, db_path))
    assert incident.detect_us <= cluster.t(50) + 60_000_000


def test_two_failures_of_one_job_are_two_incidents(db_path: Path) -> None:
    cluster = Cluster()
    job(cluster, "j7", [4, 5, 6, 7], fail_at=40, reason="OOM: out of memory")
    cluster.add(c.JobRestarted(job="j7", from_step=30, nodes=[cluster.name(n) for n in
                                                              (4, 5, 6, 7)]), cluster.t(45))
    for s in range(46, 100):
        cluster.add(c.JobStepReported(job="j7", step=s, step_time_s=9.5, tokens_per_s=1e6,
                                      loss=1.9), cluster.t(s) + 5_000_000)
    cluster.add(c.JobFailed(job="j7", step=99, exit_code=139, reason="Segmentation fault"),
                cluster.t(100))
    incidents = analyze_cluster(cluster, db_path)
    assert [(i.category, i.root) for i in incidents] == [("software", "job:j7")] * 2
