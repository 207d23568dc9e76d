"""One incident per fault episode, and the healthy-side false alarms fixed at their cause (issue
#18): a flapping cable's later bursts join its incident; a GPU that usually runs cooler than its
peers is not hot when it catches up; the siblings of a really hot GPU are not hot."""

from __future__ import annotations

from pathlib import Path

from fleet_builders import Cluster, analyze_cluster, job

from fleetlog.analysis.diagnosis import HOLD_DOWN
from fleetlog.ingest import contract as c


def test_a_flapping_cables_bursts_are_one_incident(db_path: Path) -> None:
    # Two bursts of errors and flaps an hour apart (360 scrapes), well inside the hold-down.
    cluster = Cluster(nodes=4, scrapes=480)
    bursts = ((30, 60), (420, 450))

    def cable(s: int, sw: str, port: int, v: dict[str, float]) -> None:
        if sw != "leaf-su01-4" or port != 2:
            return
        errors = sum(max(0, min(s, b) - a) for a, b in bursts)
        v["symbol_error"] = float(errors * 5)
        v["link_error_recovery"] = float(errors // 4)
        downs = [b - 2 for _a, b in bursts] + [b - 6 for _a, b in bursts]
        if s in downs:
            v["link_state"] = 1.0
        v["link_downed"] = float(sum(s >= d for d in downs))

    cluster.port_hooks.append(cable)
    incidents = analyze_cluster(cluster, db_path)
    assert [(i.category, i.root) for i in incidents] == [("network", "link:leaf-su01-4/2")]
    assert incidents[0].end_us >= cluster.t(bursts[1][0])
    assert HOLD_DOWN > 360 * 10_000_000


def test_a_cooler_gpu_catching_up_with_its_peers_is_not_hot(db_path: Path) -> None:
    # GPU 5 of n00002 runs 8 °C cooler than its peers for an hour, then at their temperature.
    cluster = Cluster(nodes=4, scrapes=480)

    def cooler(s: int, node: str, gpu: int, v: dict[str, float]) -> bool:
        if node == "n00002" and gpu == 5 and s < 400:
            v["gpu_temp_c"] -= 8.0
        return True

    cluster.hooks.append(cooler)
    assert analyze_cluster(cluster, db_path) == []


def test_the_siblings_of_a_hot_gpu_are_not_hot(db_path: Path) -> None:
    # Two GPUs per node: GPU 0 of n00002 heats 20 °C for a while, then is repaired. Its sibling
    # never changed: it is neither hot during nor after (its peer is abnormal, not a baseline).
    cluster = Cluster(nodes=4, scrapes=480, gpus=2)

    def hot(s: int, node: str, gpu: int, v: dict[str, float]) -> bool:
        if node == "n00002" and gpu == 0 and 100 <= s < 400:
            v["gpu_temp_c"] += min(20.0, (s - 100) * 1.0)
        return True

    cluster.hooks.append(hot)
    incidents = analyze_cluster(cluster, db_path)
    assert [(i.category, i.root) for i in incidents] == [("gpu_thermal", "gpu:n00002/0")]
    assert not any("n00002/1" in f.entity for f in incidents[0].findings)


def test_a_small_jobs_normal_checkpoint_is_not_slow_storage(db_path: Path) -> None:
    # Two 2-node jobs checkpoint 40 GB in 60 s, again and again; a 1-node job's first checkpoint
    # of the same 40 GB takes 260 s (fewer nodes write the same bytes), then as long each time.
    cluster = Cluster(nodes=5, scrapes=240)
    job(cluster, "big1", [0, 1])
    job(cluster, "big2", [2, 3])
    job(cluster, "small", [4])
    for k in range(1, 5):
        for name in ("big1", "big2"):
            cluster.add(c.JobCheckpointCompleted(job=name, step=40 * k, duration_s=60.0,
                                                 size_gb=40.0), cluster.t(40 * k) + 7_000_000)
    for k in range(2, 5):
        cluster.add(c.JobCheckpointCompleted(job="small", step=40 * k, duration_s=260.0,
                                             size_gb=40.0), cluster.t(40 * k) + 8_000_000)
    assert analyze_cluster(cluster, db_path) == []
