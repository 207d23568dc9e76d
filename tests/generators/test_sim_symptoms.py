"""Every fault category produces the symptoms docs/faults.md promises, read back from the events
alone (as a detector would), with the truth record naming the root and the first symptom."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fleetlog.ingest import contract as c

S = 1_000_000  # µs


def _split_gpu(entity: str) -> tuple[str, int]:
    node, index = entity.removeprefix("gpu:").split("/")
    return node, int(index)


def _truths(run, category: str) -> dict[str, c.FaultInjected]:
    found = [t for t in run.truth if t.category == category]
    assert found, f"no {category} fault reported"
    return {t.detail.split(":")[0]: t for t in found}


def _xids(run, node: str | None = None) -> list[tuple[int, str, int | None, int]]:
    return [(e.time_us, e.payload.node, e.payload.gpu, e.payload.xid)
            for e in run.of(c.XidReported) if node is None or e.payload.node == node]


def _job_events(run, job: str, kind: type[c.Payload]) -> list[c.Envelope]:
    return [e for e in run.of(kind) if e.payload.job == job]


def _running_jobs_on(run, node: str, t_us: int) -> set[str]:
    """Jobs with a rank on ``node`` and running at ``t_us``, replayed from job events."""
    nodes: dict[str, list[str]] = {}
    running: dict[str, bool] = {}
    for e in sorted(run.of(c.JobPlaced, c.JobStarted, c.JobRestarted, c.JobMigrated,
                           c.JobFailed, c.JobCompleted), key=lambda e: e.time_us):
        if e.time_us > t_us:
            break
        p = e.payload
        if isinstance(p, c.JobPlaced | c.JobRestarted | c.JobMigrated):
            nodes[p.job] = list(p.nodes)
        running[p.job] = isinstance(p, c.JobStarted | c.JobRestarted | c.JobMigrated) or (
            running.get(p.job, False) and isinstance(p, c.JobPlaced))
    return {j for j, ns in nodes.items() if node in ns and running.get(j)}


def _assert_jobs_fail(run, node: str, t_us: int, within_s: float, reason: str) -> None:
    jobs = _running_jobs_on(run, node, t_us - 1)
    for job in jobs:
        failed = [e for e in _job_events(run, job, c.JobFailed) if e.time_us >= t_us]
        assert failed, f"{job} on {node} did not fail"
        assert failed[0].time_us - t_us <= within_s * S, (job, failed[0].time_us - t_us)
        assert failed[0].payload.reason.startswith(reason), failed[0].payload.reason


def _gpu_rows(run, entity: str, column: str):
    node, index = _split_gpu(entity)
    return run.series(run.gpu(), column, node=run.node_index(node), gpu=index)


def _rising(values: np.ndarray) -> bool:
    return len(values) >= 2 and bool(np.all(np.diff(values) > 0))


# ---- GPU ---------------------------------------------------------------------------------------


def test_gpu_hw_each_variant(simulate_run) -> None:
    run = simulate_run("gpu_hw")
    truths = _truths(run, "gpu_hw")
    assert {"xid79", "nvlink_xid74", "xid62", "xid45"} <= set(truths)
    # (a) XID 79, no precursor, then the GPU is absent from the samples
    t = truths["xid79"]
    node, index = _split_gpu(t.entity)
    xid = [x for x in _xids(run, node) if x[2] == index and x[3] == 79]
    assert xid and xid[0][0] == t.start_us
    ts, crc = _gpu_rows(run, t.entity, "nvlink_crc_flit_errors")
    _, sbe = _gpu_rows(run, t.entity, "ecc_sbe_vol_total")
    before = ts < t.start_us
    assert crc[before].max() == crc[before].min() and sbe[before].max() - sbe[before].min() <= 1
    assert not np.any((ts > t.start_us) & (ts < t.end_us)), "GPU still reported after XID 79"
    _assert_jobs_fail(run, node, t.start_us, 30, "CUDA error")
    # (b) NVLink CRC errors rise for 1-5 min, then XID 74
    t = truths["nvlink_xid74"]
    node, index = _split_gpu(t.entity)
    x74 = next(x for x in _xids(run, node) if x[3] == 74)[0]
    ts, crc = _gpu_rows(run, t.entity, "nvlink_crc_flit_errors")
    window = (ts >= t.start_us) & (ts < x74)
    assert _rising(crc[window]) and 60 * S <= x74 - t.start_us <= 5 * 60 * S + 10 * S
    assert ts[window][0] == t.start_us and crc[ts < t.start_us].max() == 0
    _assert_jobs_fail(run, node, x74, 30, "CUDA error")
    # (c) XID 62 / 45: the GPU's util drops to 0
    for variant in ("xid62", "xid45"):
        t = truths[variant]
        node, _ = _split_gpu(t.entity)
        ts, util = _gpu_rows(run, t.entity, "util_pct")
        assert np.all(util[(ts > t.start_us) & (ts < t.end_us)] == 0)
        _assert_jobs_fail(run, node, t.start_us, 30, "CUDA error")


def test_gpu_hbm_precursors_then_dbe(simulate_run) -> None:
    run = simulate_run("gpu_hbm")
    truths = _truths(run, "gpu_hbm")
    expected = {"xid48": [48], "xid63_64": [63, 64], "xid140": [140]}
    assert set(expected) <= set(truths)
    for variant, codes in expected.items():
        t = truths[variant]
        node, index = _split_gpu(t.entity)
        xids = [x for x in _xids(run, node) if x[2] == index and x[0] >= t.start_us]
        assert [x[3] for x in xids] == codes
        t_xid = xids[0][0]
        ts, sbe = _gpu_rows(run, t.entity, "ecc_sbe_vol_total")
        pre = (ts >= t.start_us) & (ts < t_xid)
        assert 10 * 60 * S <= t_xid - t.start_us <= 61 * 60 * S
        assert _rising(sbe[pre]) and sbe[pre][-1] - sbe[pre][0] >= 50
        assert ts[pre][0] == t.start_us
        _, pending = _gpu_rows(run, t.entity, "row_remap_pending")
        assert pending[pre].max() == 1 and pending[ts < t.start_us].max() == 0
        _, dbe = _gpu_rows(run, t.entity, "ecc_dbe_vol_total")
        assert dbe[ts < t_xid].max() == 0 and dbe[ts > t_xid].min() == 1
        if variant == "xid63_64":
            _, failure = _gpu_rows(run, t.entity, "row_remap_failure")
            assert failure[ts > xids[1][0]].max() == 1
        _assert_jobs_fail(run, node, t_xid, 5, "uncorrectable ECC error")


def test_gpu_sram_counter_then_xid(simulate_run) -> None:
    run = simulate_run("gpu_sram")
    truths = _truths(run, "gpu_sram")
    assert {"xid94", "xid95"} <= set(truths)
    for variant, t in truths.items():
        node, index = _split_gpu(t.entity)
        xids = [x for x in _xids(run, node) if x[2] == index]
        assert [x[3] for x in xids] == [int(variant[3:])]
        ts, sram = _gpu_rows(run, t.entity, "sram_ecc_total")
        pre = (ts >= t.start_us) & (ts < xids[0][0])
        assert _rising(sram[pre]) and xids[0][0] - t.start_us >= 2 * 60 * S
        _assert_jobs_fail(run, node, xids[0][0], 5, "uncorrectable ECC error")


def test_gpu_gsp_goes_idle_and_job_fails(simulate_run) -> None:
    run = simulate_run("gpu_gsp")
    for variant, t in _truths(run, "gpu_gsp").items():
        node, index = _split_gpu(t.entity)
        xids = [x for x in _xids(run, node) if x[2] == index]
        assert [x[3] for x in xids] == [int(variant[3:])] and xids[0][0] == t.start_us
        ts, util = _gpu_rows(run, t.entity, "util_pct")
        _, power = _gpu_rows(run, t.entity, "power_w")
        after = (ts > t.start_us) & (ts < t.end_us)
        assert np.all(util[after] == 0) and np.all(power[after] < 100)
        _assert_jobs_fail(run, node, t.start_us, 60, "GSP RPC timeout")


def test_gpu_thermal_heats_throttles_and_slows_the_job(simulate_run) -> None:
    run = simulate_run("gpu_thermal")
    t = _truths(run, "gpu_thermal")["ramp"]
    node, index = _split_gpu(t.entity)
    frame = run.gpu()
    n = run.node_index(node)
    ts, temp = _gpu_rows(run, t.entity, "gpu_temp_c")
    peers = [run.series(frame, "gpu_temp_c", node=n, gpu=i)[1] for i in range(8) if i != index]
    gap = temp - np.median(peers, axis=0)
    _, bits = _gpu_rows(run, t.entity, "throttle_reasons")
    throttled = (bits.astype(np.int64) & c.THROTTLE_SW_THERMAL) > 0
    assert not throttled[ts < t.start_us].any() and throttled.any()
    t_throttle = ts[throttled][0]
    assert 5 * 60 * S <= t_throttle - t.start_us <= 15 * 60 * S + 10 * S
    assert gap[ts > t_throttle + 60 * S].mean() - gap[ts < t.start_us].mean() >= 8
    _, clock = _gpu_rows(run, t.entity, "sm_clock_mhz")
    peer_clock = np.median([run.series(frame, "sm_clock_mhz", node=n, gpu=i)[1]
                            for i in range(8) if i != index], axis=0)
    late = ts > t_throttle
    assert np.median(clock[late] / np.maximum(peer_clock[late], 1)) <= 0.82
    jobs = [a.removeprefix("job:") for a in t.affected if a.startswith("job:")]
    assert jobs, "no job was slowed"
    steps = _job_events(run, jobs[0], c.JobStepReported)
    slow = [e.payload.step_time_s for e in steps if e.time_us > t_throttle + 20 * S]
    normal = [e.payload.step_time_s for e in steps if e.time_us < t.start_us]
    assert np.median(slow) >= 1.2 * np.median(normal)


# ---- jobs --------------------------------------------------------------------------------------


def _job_nodes(run, job: str, t_us: int) -> set[str]:
    placed = [e for e in run.of(c.JobPlaced, c.JobRestarted, c.JobMigrated)
              if e.payload.job == job and e.time_us <= t_us]
    return set(placed[-1].payload.nodes)


def test_sdc_loss_goes_bad_then_the_job_fails(simulate_run) -> None:
    run = simulate_run("sdc")
    for variant, t in _truths(run, "sdc").items():
        job = t.entity.removeprefix("job:")
        reports = _job_events(run, job, c.JobStepReported)
        bad = [e for e in reports if t.start_us <= e.time_us <= t.end_us]
        good = [e.payload.loss for e in reports if e.time_us < t.start_us][-20:]
        assert bad and bad[0].time_us == t.start_us
        if variant == "nan":
            assert all(math.isnan(e.payload.loss) for e in bad)
        else:
            assert all(e.payload.loss >= 2.5 * max(good) for e in bad)
        failed = next(e for e in _job_events(run, job, c.JobFailed) if e.time_us >= t.start_us)
        assert failed.time_us == t.end_us and failed.time_us - t.start_us <= 60 * S
        assert failed.payload.reason in ("loss is NaN", "sdc check mismatch")
        nodes = _job_nodes(run, job, t.start_us)
        assert not [x for x in _xids(run) if x[1] in nodes
                    and t.start_us - 600 * S <= x[0] <= t.end_us and x[3] not in (13, 31, 43)]


def test_software_all_ranks_exit_together(simulate_run) -> None:
    run = simulate_run("software")
    for t in _truths(run, "software").values():
        job = t.entity.removeprefix("job:")
        failed = [e for e in _job_events(run, job, c.JobFailed) if e.time_us >= t.start_us]
        assert failed[0].time_us == t.start_us == t.end_us
        assert failed[0].payload.exit_code != 0
        assert failed[0].payload.reason.split(":")[0] in (
            "RuntimeError", "OOM", "ImportError", "Segmentation fault (core dumped)")
        nodes = _job_nodes(run, job, t.start_us)
        assert not [x for x in _xids(run) if x[1] in nodes
                    and abs(x[0] - t.start_us) < 600 * S and x[3] not in (13, 31, 43)]


def test_nccl_hang_stops_steps_spins_gpus_then_watchdog(simulate_run) -> None:
    run = simulate_run("nccl_hang")
    t = _truths(run, "nccl_hang")["watchdog"]
    job = t.entity.removeprefix("job:")
    assert not [e for e in _job_events(run, job, c.JobStepReported)
                if t.start_us <= e.time_us <= t.end_us]
    failed = next(e for e in _job_events(run, job, c.JobFailed) if e.time_us >= t.start_us)
    assert failed.payload.exit_code == -6 and failed.payload.reason == "NCCL watchdog timeout"
    assert failed.time_us == t.end_us and abs((t.end_us - t.start_us) - 600 * S) <= 10 * S
    frame = run.gpu()
    nodes = [run.node_index(n) for n in _job_nodes(run, job, t.start_us)]
    rows = np.isin(frame["node"], nodes) & (frame["ts"] >= t.start_us) & (frame["ts"] < t.end_us)
    assert rows.sum() > 0
    assert np.all(frame["util_pct"][rows] == 100) and np.all(frame["power_w"][rows] < 260)


# ---- network -----------------------------------------------------------------------------------


def _port_series(run, link: str, column: str):
    switch, port = link.removeprefix("link:").rsplit("/", 1)
    return run.series(run.ports(), column, switch=run.sim.topo.switch_names.index(switch),
                      port=int(port))


def test_network_cable_errors_then_flaps(simulate_run) -> None:
    run = simulate_run("network")
    t = _truths(run, "network")["cable"]
    ts, symbols = _port_series(run, t.entity, "symbol_error")
    _, recoveries = _port_series(run, t.entity, "link_error_recovery")
    _, downed = _port_series(run, t.entity, "link_downed")
    _, state = _port_series(run, t.entity, "link_state")
    first_down = ts[state == c.PORT_STATE_DOWN][0]
    pre = (ts >= t.start_us) & (ts < first_down)
    assert ts[pre][0] == t.start_us and first_down - t.start_us >= 2 * 60 * S
    assert _rising(symbols[pre]) and _rising(recoveries[pre])
    assert downed[-1] - downed[ts < t.start_us][-1] >= 3
    flaps = state[(ts >= first_down) & (ts < t.end_us)]
    assert np.count_nonzero(np.diff(flaps) > 0) >= 2, "the link never came back between flaps"
    nic = next(a for a in t.affected if a.startswith("nic:"))
    node = nic.removeprefix("nic:").split("/")[0]
    jobs = _running_jobs_on(run, node, t.start_us)
    for job in jobs:
        steps = _job_events(run, job, c.JobStepReported)
        slowed = [e.payload.step_time_s for e in steps if t.start_us < e.time_us < first_down]
        normal = [e.payload.step_time_s for e in steps if e.time_us < t.start_us]
        assert np.median(slowed) >= 1.05 * np.median(normal)
    _assert_jobs_fail(run, node, first_down - 10 * S, 40, "NCCL error")


def test_leaf_switch_blast_radius(simulate_run) -> None:
    """A dead leaf takes one rail of every node under it, at once; other leaves stay up; every
    job with a node in the scalable unit fails."""
    run = simulate_run("network")
    t = _truths(run, "network")["leaf switch down"]
    topo = run.sim.topo
    leaf = topo.switch_names.index(t.entity.removeprefix("switch:"))
    frame = run.ports()
    at = frame["ts"] == t.start_us
    before = frame["ts"] == t.start_us - run.sim.config.interval_us
    mine = frame["switch"] == leaf
    assert np.all(frame["link_state"][at & mine] == c.PORT_STATE_DOWN)
    assert np.all(frame["link_state"][before & mine] == c.PORT_STATE_ACTIVE)
    other_leaves = (frame["switch"] < topo.n_leaves) & ~mine
    assert np.array_equal(frame["link_state"][at & other_leaves],
                          frame["link_state"][before & other_leaves]), "other leaves changed"
    during = (frame["ts"] >= t.start_us) & (frame["ts"] < t.end_us) & mine
    assert np.all(frame["link_state"][during] == c.PORT_STATE_DOWN)
    su = leaf // topo.gpus_per_node
    su_nodes = [topo.node_names[n] for n in topo.su_nodes(su)]
    rail = leaf % topo.gpus_per_node
    assert {f"nic:{n}/{rail}" for n in su_nodes} <= set(t.affected)
    hit = set().union(*(_running_jobs_on(run, n, t.start_us - 1) for n in su_nodes))
    assert hit
    for job in hit:
        failed = [e for e in _job_events(run, job, c.JobFailed) if e.time_us >= t.start_us - 10 * S]
        assert failed and failed[0].time_us - t.start_us <= 40 * S
        assert f"job:{job}" in t.affected
    outside = {n for n in topo.node_names} - set(su_nodes)
    spared = set().union(*(_running_jobs_on(run, n, t.start_us - 1) for n in outside)) - hit
    for job in spared:
        assert not [e for e in _job_events(run, job, c.JobFailed)
                    if 0 <= e.time_us - t.start_us <= 60 * S]


def test_nic_errors_then_port_down_others_clean(simulate_run) -> None:
    run = simulate_run("nic")
    t = _truths(run, "nic")["hca"]
    link = next(a for a in t.affected if a.startswith("link:"))
    ts, errors = _port_series(run, link, "rcv_errors")
    _, state = _port_series(run, link, "link_state")
    down = ts[state == c.PORT_STATE_DOWN][0]
    pre = (ts >= t.start_us) & (ts < down)
    assert ts[pre][0] == t.start_us and _rising(errors[pre])
    assert np.all(state[(ts >= down) & (ts < t.end_us)] == c.PORT_STATE_DOWN)
    switch, port = link.removeprefix("link:").rsplit("/", 1)
    frame = run.ports()
    same_leaf = (frame["switch"] == run.sim.topo.switch_names.index(switch)) & (
        frame["port"] != int(port)) & (frame["ts"] >= t.start_us) & (frame["ts"] < t.end_us)
    assert np.all(frame["link_state"][same_leaf] == c.PORT_STATE_ACTIVE)
    assert np.all(frame["rcv_errors"][same_leaf] == 0)
    node = t.entity.removeprefix("nic:").split("/")[0]
    _assert_jobs_fail(run, node, down, 40, "NCCL error")


# ---- hosts, racks, storage ---------------------------------------------------------------------


def _host(run, node: str) -> list[tuple[int, str, str]]:
    return [(e.time_us, e.type, getattr(e.payload, "reason", "")) for e in run.of(
        c.NodeWentDown, c.NodeCameUp, c.NodeMaintenanceStarted, c.NodeMaintenanceEnded)
        if e.payload.node == node]


def _node_sample_times(run, node: str) -> np.ndarray:
    frame = run.gpu()
    return np.unique(frame["ts"][frame["node"] == run.node_index(node)])


def test_host_maintenance_drains_reboots_and_returns(simulate_run) -> None:
    run = simulate_run("host_maintenance")
    t = _truths(run, "host_maintenance")["reboot"]
    node = t.entity.removeprefix("node:")
    events = _host(run, node)
    kinds = [k for _, k, _ in events]
    assert kinds == ["node.maintenance_started", "node.went_down", "node.came_up",
                     "node.maintenance_ended"]
    assert events[0][0] == t.start_us and events[1][2] == "reboot"
    seen = _node_sample_times(run, node)
    assert not np.any((seen > events[1][0]) & (seen < events[2][0]))
    assert np.any(seen > events[2][0])
    _assert_jobs_fail(run, node, t.start_us, 30, "node drained for maintenance")


def test_host_hw_stops_reporting_without_gpu_errors(simulate_run) -> None:
    run = simulate_run("host_hw")
    t = _truths(run, "host_hw")["unreachable"]
    node = t.entity.removeprefix("node:")
    seen = _node_sample_times(run, node)
    assert seen[seen < t.start_us].size and not np.any((seen >= t.start_us) & (seen < t.end_us))
    assert not [x for x in _xids(run, node) if t.start_us - 1800 * S <= x[0] <= t.start_us]
    went = next(e for e in _host(run, node) if e[1] == "node.went_down")
    assert went[2] == "unreachable" and 60 * S <= went[0] - t.start_us <= 90 * S
    _assert_jobs_fail(run, node, t.start_us - 10 * S, 70, "node failure")


def test_rack_power_blast_radius(simulate_run) -> None:
    """A PDU takes its whole rack in one scrape, and only that rack."""
    run = simulate_run("rack_power")
    t = _truths(run, "rack_power")["pdu"]
    topo = run.sim.topo
    rack = topo.rack_names.index(t.entity.removeprefix("rack:"))
    nodes = [topo.node_names[n] for n in topo.rack_nodes(rack)]
    frame = run.gpu()
    at = frame["ts"] == t.start_us
    before = frame["ts"] == t.start_us - run.sim.config.interval_us
    in_rack = np.isin(frame["node"], list(topo.rack_nodes(rack)))
    assert in_rack[before].sum() == len(nodes) * topo.gpus_per_node
    assert in_rack[at].sum() == 0
    assert (~in_rack[at]).sum() == (topo.n_nodes - len(nodes)) * topo.gpus_per_node
    for node in nodes:
        went = [e for e in _host(run, node) if e[1] == "node.went_down"]
        assert went and went[0][2] == "power loss" and abs(went[0][0] - t.start_us) <= 15 * S
        assert f"node:{node}" in t.affected
        _assert_jobs_fail(run, node, t.start_us - 10 * S, 60, "node failure")


def test_cooling_warms_one_rack_together(simulate_run) -> None:
    run = simulate_run("cooling")
    t = _truths(run, "cooling")["rack"]
    topo = run.sim.topo
    rack = topo.rack_names.index(t.entity.removeprefix("rack:"))
    frame = run.gpu()
    in_rack = np.isin(frame["node"], list(topo.rack_nodes(rack)))
    bits = frame["throttle_reasons"].astype(np.int64) & c.THROTTLE_SW_THERMAL
    t_throttle = frame["ts"][in_rack & (bits > 0)].min()
    assert 10 * 60 * S <= t_throttle - t.start_us <= 30 * 60 * S + 10 * S
    assert not np.any(bits[~in_rack] > 0)

    def mean_temp(mask: np.ndarray, lo: int, hi: int) -> float:
        rows = mask & (frame["ts"] >= lo) & (frame["ts"] < hi)
        return float(frame["gpu_temp_c"][rows].mean())

    early = (t.start_us - 20 * 60 * S, t.start_us)
    late = (t_throttle, t_throttle + 10 * 60 * S)
    rise = mean_temp(in_rack, *late) - mean_temp(in_rack, *early)
    others = mean_temp(~in_rack, *late) - mean_temp(~in_rack, *early)
    assert rise - others >= 6


def test_storage_slows_checkpoints(simulate_run) -> None:
    run = simulate_run("storage")
    t = next(iter(_truths(run, "storage").values()))
    jobs = {j.id: j for j in run.sim.sched.jobs}
    slowed = [e for e in run.of(c.JobCheckpointCompleted) if f"job:{e.payload.job}" in t.affected
              and e.time_us >= t.start_us]
    assert slowed and slowed[0].time_us == t.start_us
    first = slowed[0].payload
    assert first.duration_s >= 4.3 * jobs[first.job].checkpoint_s()
    healthy = [e.payload for e in run.of(c.JobCheckpointCompleted) if e.time_us < t.start_us]
    assert all(p.duration_s <= 1.15 * jobs[p.job].checkpoint_s() for p in healthy)


def test_truth_names_first_symptom_and_known_categories(simulate_run) -> None:
    run = simulate_run("mixed")
    assert {t.category for t in run.truth} >= {"gpu_hbm", "nic", "cooling", "gpu_thermal",
                                               "software", "nccl_hang", "network"}
    cfg = run.sim.config
    for t in run.truth:
        assert t.category in c.ALL_CATEGORIES and t.entity in t.affected
        assert cfg.start_us <= t.start_us < cfg.end_us
        assert t.end_us is None or t.end_us >= t.start_us
    # several faults overlap in time and in one scalable unit
    su_faults = [t for t in run.truth if t.category in ("gpu_hbm", "nic", "cooling",
                                                        "gpu_thermal", "network")]
    starts, ends = [t.start_us for t in su_faults], [t.end_us or cfg.end_us for t in su_faults]
    assert max(starts) < min(ends)
    topo = run.sim.topo
    leaf = next(t for t in su_faults if t.entity.startswith("switch:"))
    su = topo.switch_names.index(leaf.entity.removeprefix("switch:")) // topo.gpus_per_node
    hbm = next(t for t in su_faults if t.category == "gpu_hbm")
    assert topo.node_su[run.node_index(_split_gpu(hbm.entity)[0])] == su


@pytest.mark.parametrize("scenario", ["quiet", "migration"])
def test_no_fault_scenarios_report_no_truth(simulate_run, scenario: str) -> None:
    assert simulate_run(scenario).truth == []
