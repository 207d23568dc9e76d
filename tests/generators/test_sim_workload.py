"""Topology, job mix, phase-dependent healthy telemetry, restarts from checkpoints, migration."""

from __future__ import annotations

import numpy as np
import pytest

from fleetlog.generators.config import SimConfig, SimulationError
from fleetlog.generators.jobs import job_mix
from fleetlog.generators.simulator import Simulator
from fleetlog.generators.topology import build_topology
from fleetlog.ingest import contract as c

S = 1_000_000


def test_topology_is_rail_optimized_and_named_as_documented() -> None:
    topo = build_topology(SimConfig(nodes=80, regions=1, vclusters=2))
    assert topo.node_names[0] == "n00001" and topo.rack_names[-1] == "r0020"
    assert topo.n_sus == 3 and topo.n_leaves == 24
    assert topo.switch_names[:2] == ["leaf-su01-0", "leaf-su01-1"]
    assert [n for n in topo.switch_names if n.startswith("spine")] == ["spine-00", "spine-01",
                                                                       "spine-02"]
    # NIC i of every node in an SU goes to leaf i of that SU, port = position in the SU + 1
    for node in (0, 33, 79):
        for rail in range(8):
            port = int(topo.down_port[node, rail])
            su = node // 32
            assert topo.switch_names[topo.port_switch[port]] == f"leaf-su{su + 1:02d}-{rail}"
            assert topo.port_number[port] == node - 32 * su + 1
    links = [p for p in topo.inventory() if isinstance(p, c.LinkRegistered)]
    assert c.LinkRegistered(switch="leaf-su01-3", port=5, peer="nic:n00005/3") in links
    assert sum(1 for link in links if link.peer.startswith("switch:spine")) == 24 * 3
    spares = topo.node_spare
    for vc in range(2):
        members = topo.node_vc == vc
        assert spares[members].sum() == round(0.05 * members.sum())


def test_topology_refuses_impossible_layouts() -> None:
    with pytest.raises(SimulationError, match="regions"):
        build_topology(SimConfig(nodes=32, regions=2))
    with pytest.raises(SimulationError, match="virtual clusters"):
        build_topology(SimConfig(nodes=8, vclusters=3))
    with pytest.raises(SimulationError, match="--nodes"):
        SimConfig(nodes=0)


def test_job_mix_has_a_few_large_jobs_and_many_small_ones() -> None:
    sizes = job_mix(970, np.random.default_rng(1))
    assert 0.85 * 970 <= sum(sizes) <= 0.9 * 970
    assert max(sizes) * 8 >= 2000  # thousands of GPUs
    assert sum(1 for s in sizes if s <= 2) >= len(sizes) / 2
    assert len(sizes) >= 30


def test_healthy_telemetry_follows_the_job_phase(simulate_run) -> None:
    """No faults, yet a naive "util < 20 % on a busy GPU" rule would fire: checkpoints."""
    run = simulate_run("quiet")
    f = run.gpu()
    busy = f["fb_used_mib"] > 0
    compute = busy & (f["util_pct"] >= 95)
    comm = busy & (f["util_pct"] >= 40) & (f["util_pct"] <= 70)
    ckpt = busy & (f["util_pct"] < 15)
    idle = ~busy
    for mask in (compute, comm, ckpt, idle):
        assert mask.sum() > 100
    assert np.percentile(f["power_w"][compute], 1) >= 595 and \
        np.percentile(f["power_w"][compute], 99) <= 725
    assert np.percentile(f["power_w"][comm], 99) < 480
    assert np.percentile(f["power_w"][ckpt], 1) >= 95
    assert np.percentile(f["power_w"][ckpt], 99) < 225
    assert np.all(f["util_pct"][idle] == 0) and np.percentile(f["power_w"][idle], 99) < 95
    late = f["ts"] > run.sim.config.start_us + 30 * 60 * S
    assert np.percentile(f["gpu_temp_c"][idle & late], 5) >= 28
    assert np.percentile(f["gpu_temp_c"][idle & late], 95) <= 42
    assert np.percentile(f["gpu_temp_c"][compute & late], 5) >= 58
    assert np.percentile(f["gpu_temp_c"][compute & late], 95) <= 80
    # benign noise only: a lone SBE here and there, a few symbol errors, never a link down
    assert f["ecc_sbe_vol_total"].max() <= 3 and f["ecc_dbe_vol_total"].max() == 0
    p = run.ports()
    assert p["link_downed"].max() == 0 and np.all(p["link_state"] == c.PORT_STATE_ACTIVE)
    assert p["symbol_error"].max() <= 10
    assert np.all(np.diff(run.series(p, "xmit_data", switch=0, port=1)[1]) >= 0)
    assert not [e for e in run.of(c.XidReported) if e.payload.xid not in (13, 31, 43)]
    assert not run.of(c.JobFailed, c.NodeWentDown)


def test_failed_jobs_restart_from_their_last_checkpoint_on_healthy_nodes(simulate_run) -> None:
    run = simulate_run("gpu_hw")
    restarted = 0
    for fail in run.of(c.JobFailed):
        job = fail.payload.job
        mine = [e for e in run.events if getattr(e.payload, "job", None) == job]
        before = [e for e in mine if e.time_us <= fail.time_us and e is not fail]
        ckpts = [e for e in before if isinstance(e.payload, c.JobCheckpointCompleted)]
        resumed = [e for e in before if isinstance(e.payload, c.JobStarted | c.JobRestarted)]
        anchor = max([e.time_us for e in ckpts + resumed])
        assert fail.payload.lost_s == pytest.approx((fail.time_us - anchor) / S, abs=1e-3)
        after = [e for e in mine if e.time_us > fail.time_us]
        restart = next((e for e in after if isinstance(e.payload, c.JobRestarted)), None)
        if restart is None:
            continue
        restarted += 1
        last_step = ckpts[-1].payload.step if ckpts else resumed[-1].payload.step if isinstance(
            resumed[-1].payload, c.JobStarted) else resumed[-1].payload.from_step
        assert restart.payload.from_step == last_step
        assert restart.payload.overhead_s >= 600
        assert restart.payload.overhead_s == pytest.approx((restart.time_us - fail.time_us) / S)
        culprit = next(t for t in run.truth if f"job:{job}" in t.affected)
        bad_node = culprit.entity.removeprefix("gpu:").split("/")[0]
        assert bad_node not in restart.payload.nodes
        steps = [e.payload.step for e in after if isinstance(e.payload, c.JobStepReported)]
        assert steps and steps[0] >= last_step
    assert restarted >= 2
    summary = run.sim.summary()
    assert summary["lost_gpu_hours"] > 0 and summary["job_restarts"] == restarted


def test_migration_pauses_checkpoints_moves_and_resumes(simulate_run) -> None:
    run = simulate_run("migration")
    moves = run.of(c.JobMigrated)
    assert len(moves) == 1
    move = moves[0].payload
    assert move.from_vcluster == "vc0" and move.to_vcluster == "vc1"
    vc_of = {p.node: p.vcluster for p in (e.payload for e in run.of(c.NodeRegistered))}
    assert {vc_of[n] for n in move.nodes} == {"vc1"}
    mine = [e for e in run.events if getattr(e.payload, "job", None) == move.job]
    at = mine.index(moves[0])
    assert isinstance(mine[at - 2].payload, c.JobCheckpointStarted)
    assert isinstance(mine[at - 1].payload, c.JobCheckpointCompleted)
    ckpt_step = mine[at - 1].payload.step
    resumed = [e.payload.step for e in mine[at + 1:] if isinstance(e.payload, c.JobStepReported)]
    assert resumed and resumed[0] >= ckpt_step
    gpus = run.gpu()
    later = gpus["ts"] > moves[0].time_us + 60 * S
    new_nodes = np.isin(gpus["node"], [run.node_index(n) for n in move.nodes])
    assert np.median(gpus["util_pct"][later & new_nodes]) > 30
    assert run.sim.summary()["migrations"] == 1


def test_request_migration_api_checks_names() -> None:
    sim = Simulator(SimConfig(nodes=16, hours=0.1, scenario="quiet"))
    with pytest.raises(SimulationError, match="no job"):
        sim.request_migration("j9999", "vc1")
