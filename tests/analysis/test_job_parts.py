"""A slowed job localized to the GPU that slows it (analysis/detectors/job_parts.py, issue #19):
a 10 % slowdown joined with a weak signal on exactly one GPU of the job's nodes names that GPU
within a minute or two; the same weak signal with no slowdown, a slowdown with no signal, or a
signal on two GPUs names none; another incident on the job's nodes keeps the finding as its
evidence; the finding cites no hardware evidence (no drain on it)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from fleet_builders import STEP, Cluster, analyze_cluster, only

from fleetlog.analysis.diagnosis import Incident
from fleetlog.analysis.evidence import CAPACITY_ACTIONS
from fleetlog.cli.main import cli
from fleetlog.ingest import contract as c

MIN_US = 60 * 1_000_000


def slowed_job(cluster: Cluster, name: str, nodes: list[int], at: int | None,
               slowdown: float, noise: float = 0.01) -> int:
    """A job whose steps (``noise``: their relative spread) run ``1 + slowdown`` times slower
    from scrape ``at``; returns the time of its first slow step (or 0 when ``at`` is None)."""
    names = [cluster.name(n) for n in nodes]
    cluster.add(c.JobSubmitted(job=name, gpus=8 * len(nodes), vcluster="vc0"), cluster.t(0) - 10)
    cluster.add(c.JobPlaced(job=name, nodes=names, vcluster="vc0"), cluster.t(0) - 9)
    cluster.add(c.JobStarted(job=name, step=0), cluster.t(0) - 8)
    rng = np.random.default_rng(3)
    for s in range(cluster.scrapes):
        slow = at is not None and s >= at
        step_s = 9.5 * (1 + (slowdown if slow else 0.0)) * (1 + noise * rng.standard_normal())
        cluster.add(c.JobStepReported(job=name, step=s + 1, step_time_s=round(step_s, 4),
                                      tokens_per_s=1e6, loss=2.0), cluster.t(s) + 5_000_000)
    return cluster.t(at) + 5_000_000 if at is not None else 0


def noisy_power(cluster: Cluster, spread: float = 0.04) -> None:
    rng = np.random.default_rng(11)
    noise = rng.normal(0.0, spread, (cluster.scrapes, cluster.nodes, cluster.gpus))

    def scatter(s: int, n: str, g: int, v: dict[str, float]) -> bool:
        v["power_w"] *= 1.0 + float(noise[s, int(n[1:]) - 1, g])
        return True

    cluster.hooks.append(scatter)


def replay_once(cluster: Cluster, node: str, gpu: int, at: int) -> None:
    """One PCIe replay on ``gpu`` of ``node`` at scrape ``at``, none before or after."""
    def hook(s: int, n: str, g: int, v: dict[str, float]) -> bool:
        if n == node and g == gpu and s >= at:
            v["pcie_replays"] = 1.0
        return True

    cluster.hooks.append(hook)


def gpu_incidents(incidents: list[Incident]) -> list[Incident]:
    return [i for i in incidents if i.category == "gpu_hw"]


def part_findings(incident: Incident) -> list[str]:
    return [f.kind for f in incident.findings if f.kind == "gpu_slows_job"]


def test_one_replay_on_a_slowed_jobs_gpu_names_it_at_once(db_path: Path) -> None:
    cluster = Cluster(scrapes=150)
    noisy_power(cluster)
    slowed = slowed_job(cluster, "j1", list(range(8)), at=100, slowdown=0.10)
    replay_once(cluster, "n00004", 2, at=95)  # the link starts retraining, the job feels it
    incident = only(analyze_cluster(cluster, db_path))
    assert (incident.category, incident.root) == ("gpu_hw", "gpu:n00004/2")
    assert part_findings(incident) == ["gpu_slows_job"]
    # The third slow step's median says so: two steps after the first slow one.
    assert incident.detect_us - slowed <= 3 * STEP
    # A slower job and one replay are no hardware evidence: nothing cited, nothing to drain on.
    assert all(f.evidence == () for f in incident.findings if f.kind == "gpu_slows_job")
    for command in ("analyze", "recommend"):
        result = CliRunner().invoke(cli, [command, "--db", str(db_path), "--json"])
        assert result.exit_code == 0, result.output
    actions = json.loads(result.output)
    assert [a["action"] for a in actions if a["target"] == "gpu:n00004/2"] == ["investigate"]
    assert not {a["action"] for a in actions} & CAPACITY_ACTIONS


def test_power_a_little_low_on_a_slowed_jobs_gpu_names_it_within_minutes(
        db_path: Path) -> None:
    cluster = Cluster(scrapes=160)
    noisy_power(cluster)
    slowed = slowed_job(cluster, "j1", list(range(8)), at=100, slowdown=0.12)

    def weak(s: int, n: str, g: int, v: dict[str, float]) -> bool:
        if n == "n00006" and g == 5 and s >= 100:  # 12 % under its peers, inside their spread
            v["power_w"] *= 0.88
        return True

    cluster.hooks.append(weak)
    incident = only(analyze_cluster(cluster, db_path))
    assert (incident.category, incident.root) == ("gpu_hw", "gpu:n00006/5")
    assert part_findings(incident) == ["gpu_slows_job"]
    assert incident.detect_us - slowed <= 2 * MIN_US, (incident.detect_us - slowed) / 1e6


def test_a_replay_blip_on_a_job_that_did_not_slow_names_nothing(db_path: Path) -> None:
    cluster = Cluster(scrapes=150)
    noisy_power(cluster)
    slowed_job(cluster, "j1", list(range(8)), at=None, slowdown=0.0)
    replay_once(cluster, "n00004", 2, at=95)
    assert analyze_cluster(cluster, db_path) == []


def test_a_slowdown_no_gpu_shows_is_no_gpu_incident(db_path: Path) -> None:
    cluster = Cluster(scrapes=150)
    noisy_power(cluster)
    slowed_job(cluster, "j1", list(range(8)), at=100, slowdown=0.10)
    assert gpu_incidents(analyze_cluster(cluster, db_path)) == []


def test_replays_on_two_gpus_of_the_slowed_job_name_neither(db_path: Path) -> None:
    cluster = Cluster(scrapes=150)
    noisy_power(cluster)
    slowed_job(cluster, "j1", list(range(8)), at=100, slowdown=0.10)
    replay_once(cluster, "n00004", 2, at=95)
    replay_once(cluster, "n00007", 6, at=101)
    assert gpu_incidents(analyze_cluster(cluster, db_path)) == []


def test_a_node_held_back_keeps_the_slowed_jobs_blip_as_its_evidence(db_path: Path) -> None:
    cluster = Cluster(scrapes=150)
    noisy_power(cluster)
    slowed_job(cluster, "j1", list(range(8)), at=100, slowdown=0.15)
    replay_once(cluster, "n00002", 1, at=98)  # a blip elsewhere in the job, same moment

    def capped(s: int, n: str, g: int, v: dict[str, float]) -> bool:
        if n == "n00006" and s >= 100:  # the real cause: every GPU of n00006 held back
            v["power_w"] = 420.0
            v["sm_clock_mhz"] *= 0.85
        return True

    cluster.hooks.append(capped)
    incident = only(analyze_cluster(cluster, db_path))
    assert (incident.category, incident.root) == ("host_hw", "node:n00006")
    assert "gpu_slows_job" in {f.kind for f in incident.findings}



def test_a_lone_replay_names_nothing_where_the_fleet_replays_often(db_path: Path) -> None:
    # Half the GPUs of the idle nodes blip once early on: replays are common on this fleet, so
    # one on the slowed job's 64 GPUs could be chance; the power of its GPUs shows nothing.
    cluster = Cluster(nodes=16, scrapes=150)
    noisy_power(cluster)
    slowed_job(cluster, "j1", list(range(8)), at=100, slowdown=0.10)
    replay_once(cluster, "n00004", 2, at=95)
    for n in range(8, 16):
        for g in range(0, 8, 2):
            replay_once(cluster, cluster.name(n), g, at=3)
    assert gpu_incidents(analyze_cluster(cluster, db_path)) == []


def test_a_jobs_own_step_noise_sets_what_slower_means(db_path: Path) -> None:
    # Steps scattering 5 % (a job with an uneven input pipeline): 10 % slower for a while is
    # inside its own spread, so a replay then names nothing.
    cluster = Cluster(scrapes=150)
    noisy_power(cluster)
    slowed_job(cluster, "j1", list(range(8)), at=100, slowdown=0.10, noise=0.05)
    replay_once(cluster, "n00004", 2, at=95)
    assert gpu_incidents(analyze_cluster(cluster, db_path)) == []
