"""The fail-slow scenarios: each kind emits its truth under its part's category and its symptoms,
read back from the samples alone, as a peer-comparing detector would: the part against the other
GPUs of its node or the other ports of its node, with no error counter, throttle bit or XID."""

from __future__ import annotations

import re

import numpy as np

from fleetlog.generators.faults import FAILSLOW_KINDS, SCENARIOS
from fleetlog.ingest import contract as c

S = 1_000_000  # µs
SETTLE_US = 6 * 60 * S  # past the longest onset ramp (5 min) and a scrape


def _truths(run, kind: str) -> list[c.FaultInjected]:
    found = [t for t in run.truth if t.detail.split(":")[0] == kind]
    assert len(found) == 3, [t.detail for t in run.truth]
    for truth in found:
        assert truth.category == FAILSLOW_KINDS[kind]
        assert truth.scenario == f"failslow_{kind}"
    return found


def _gpu(run, entity: str) -> tuple[int, int]:
    node, index = entity.removeprefix("gpu:").split("/")
    return run.node_index(node), int(index)


def _window(run, truth: c.FaultInjected) -> tuple[int, int]:
    end = truth.end_us if truth.end_us is not None else run.sim.config.end_us
    return truth.start_us + SETTLE_US, min(end, run.sim.config.end_us)


def _node_rows(run, node: int, lo: int, hi: int) -> dict[str, np.ndarray]:
    g = run.gpu()
    mask = (g["node"] == node) & (g["ts"] >= lo) & (g["ts"] < hi)
    return {k: v[mask] for k, v in g.items()}


def _compute_rows(rows: dict[str, np.ndarray], gpu: int) -> tuple[np.ndarray, np.ndarray]:
    """(the GPU's rows, its node peers' rows) at the scrapes where the node computes."""
    busy = np.unique(rows["ts"][(rows["util_pct"] >= 95) & (rows["gpu"] != gpu)])
    at = np.isin(rows["ts"], busy)
    return at & (rows["gpu"] == gpu), at & (rows["gpu"] != gpu)


def _no_xid_on(run, node_name: str, lo: int, hi: int) -> None:
    assert not [e for e in run.of(c.XidReported)
                if e.payload.node == node_name and lo <= e.time_us <= hi]


def _job_slowdown(run, truth: c.FaultInjected) -> float | None:
    """The slowed job's median step time after the onset over before (None: too few steps)."""
    jobs = [a.removeprefix("job:") for a in truth.affected if a.startswith("job:")]
    assert jobs, truth.affected
    lo, hi = _window(run, truth)
    steps = [(e.time_us, e.payload.step_time_s) for e in run.of(c.JobStepReported)
             if e.payload.job == jobs[0]]
    before = [s for t, s in steps if t < truth.start_us]
    after = [s for t, s in steps if lo <= t < hi]
    if len(before) < 3 or len(after) < 3:
        return None
    return float(np.median(after) / np.median(before))


def test_every_failslow_kind_has_its_scenarios() -> None:
    for kind in FAILSLOW_KINDS:
        assert f"failslow_{kind}" in SCENARIOS
    family = SCENARIOS["failslow"]
    assert sorted(s.variant or "" for s in family.scripted) == sorted([*FAILSLOW_KINDS] * 2)
    assert all(not SCENARIOS[f"failslow_{k}"].weights for k in FAILSLOW_KINDS)


def test_clock_drop_is_a_slow_gpu_with_no_bit_and_no_xid(simulate_run) -> None:
    run = simulate_run("failslow_clock_drop")
    slowed = 0
    for truth in _truths(run, "clock_drop"):
        node, gpu = _gpu(run, truth.entity)
        lo, hi = _window(run, truth)
        rows = _node_rows(run, node, lo, hi)
        mine, peers = _compute_rows(rows, gpu)
        assert mine.sum() > 20
        drop = 1 - np.median(rows["sm_clock_mhz"][mine]) / np.median(rows["sm_clock_mhz"][peers])
        assert 0.22 <= drop <= 0.42, drop
        power = 1 - np.median(rows["power_w"][mine]) / np.median(rows["power_w"][peers])
        assert 0.18 <= power <= 0.47, power
        assert np.median(rows["util_pct"][mine]) >= 95  # busy: the GPU is slow, not idle
        mask = rows["gpu"] == gpu
        assert not rows["throttle_reasons"][mask].any()
        _no_xid_on(run, run.sim.topo.node_names[node], truth.start_us, hi)
        ratio = _job_slowdown(run, truth)
        if ratio is not None:
            assert ratio > 1.2, ratio  # every rank waits for the slow one
            slowed += 1
    assert slowed >= 1


def test_power_cap_holds_every_gpu_of_the_node(simulate_run) -> None:
    run = simulate_run("failslow_power_cap")
    bits_seen = set()
    for truth in _truths(run, "power_cap"):
        node = run.node_index(truth.entity.removeprefix("node:"))
        match = re.match(r"power_cap: (\d+) W, SM clock -(\d+)%, throttle bits (0x[0-9a-f]+)",
                         truth.detail)
        assert match, truth.detail
        cap, bits = float(match[1]), int(match[3], 16)
        bits_seen.add(bits)
        lo, hi = _window(run, truth)
        rows = _node_rows(run, node, lo, hi)
        assert len(rows["ts"]) > 100 and rows["power_w"].max() <= cap + 0.5
        assert set(rows["throttle_reasons"].astype(int).tolist()) == {bits}
        g = run.gpu()
        others = (g["node"] != node) & (g["ts"] >= lo) & (g["ts"] < hi) & (g["util_pct"] >= 95)
        assert np.median(g["power_w"][others]) > 600 > cap
        busy = rows["util_pct"] >= 95
        assert np.median(rows["sm_clock_mhz"][busy]) < 0.91 * np.median(g["sm_clock_mhz"][others])
        assert {f"gpu:{truth.entity.removeprefix('node:')}/{i}" for i in range(8)} <= set(
            truth.affected)
        _no_xid_on(run, truth.entity.removeprefix("node:"), truth.start_us, hi)
    assert len(bits_seen) >= 1


def test_pcie_degraded_replays_rise_on_one_gpu_only(simulate_run) -> None:
    run = simulate_run("failslow_pcie_degraded")
    for truth in _truths(run, "pcie_degraded"):
        node, gpu = _gpu(run, truth.entity)
        _lo, hi = _window(run, truth)
        rows = _node_rows(run, node, truth.start_us, hi)
        rise = {}
        for index in range(8):
            replays = rows["pcie_replays"][rows["gpu"] == index]
            rise[index] = replays.max() - replays.min()
        peers = max(v for k, v in rise.items() if k != gpu)
        assert rise[gpu] >= 5 and rise[gpu] >= 5 * max(peers, 1), rise
        mine = rows["gpu"] == gpu  # no fault bit (0x4 comes and goes on healthy busy GPUs)
        assert not (rows["throttle_reasons"][mine].astype(int) & ~c.THROTTLE_POWER_CAP).any()


def test_port_bandwidth_halves_one_port_with_clean_counters(simulate_run) -> None:
    run = simulate_run("failslow_port_bandwidth")
    topo, ports = run.sim.topo, run.ports()
    for truth in _truths(run, "port_bandwidth"):
        leaf, number = truth.entity.removeprefix("link:").rsplit("/", 1)
        nic = next(a for a in truth.affected if a.startswith("nic:"))
        node = run.node_index(nic.removeprefix("nic:").split("/")[0])
        lo, hi = _window(run, truth)

        def totals(p: int, lo: int = lo, hi: int = hi) -> dict[str, float]:
            s, n = topo.switch_names.index(topo.switch_names[topo.port_switch[p]]), \
                int(topo.port_number[p])
            out = {}
            for column in ("xmit_data", "rcv_data", "symbol_error", "rcv_errors",
                           "link_downed", "link_error_recovery", "xmit_discards"):
                ts, values = run.series(ports, column, switch=s, port=n)
                values = values[(ts >= lo) & (ts < hi)]
                out[column] = float(values[-1] - values[0])
            return out

        rails = [int(topo.down_port[node, r]) for r in range(topo.gpus_per_node)]
        faulty = next(p for p in rails if topo.switch_names[topo.port_switch[p]] == leaf
                      and int(topo.port_number[p]) == int(number))
        mine = totals(faulty)
        others = [totals(p) for p in rails if p != faulty]
        for column in ("xmit_data", "rcv_data"):
            ratio = mine[column] / np.median([o[column] for o in others])
            assert 0.35 <= ratio <= 0.65, (column, ratio)
        for column in ("symbol_error", "rcv_errors", "link_downed", "link_error_recovery",
                       "xmit_discards"):
            assert mine[column] == 0, column
        ratio = _job_slowdown(run, truth)
        assert ratio is None or ratio > 1.05, ratio


def test_nvlink_bandwidth_lowers_power_at_full_clock(simulate_run) -> None:
    run = simulate_run("failslow_nvlink_bandwidth")
    for truth in _truths(run, "nvlink_bandwidth"):
        node, gpu = _gpu(run, truth.entity)
        lo, hi = _window(run, truth)
        rows = _node_rows(run, node, lo, hi)
        mine, peers = _compute_rows(rows, gpu)
        power = 1 - np.median(rows["power_w"][mine]) / np.median(rows["power_w"][peers])
        assert 0.05 <= power <= 0.32, power
        clock = np.median(rows["sm_clock_mhz"][mine]) / np.median(rows["sm_clock_mhz"][peers])
        assert clock > 0.97, clock
        crc = rows["nvlink_crc_flit_errors"][rows["gpu"] == gpu]
        per_hour = (crc[-1] - crc[0]) / ((hi - lo) / 3600 / S)
        assert per_hour <= 60  # a trickle at most, not the rise before an XID 74
        _no_xid_on(run, run.sim.topo.node_names[node], truth.start_us, hi)


def test_node_network_slows_every_nic_port_of_one_node_alike(simulate_run) -> None:
    """Against its own node no port lags (every rail alike); against the same rail of another
    node of its job each carries the drawn share; no error counter moves."""
    run = simulate_run("failslow_node_network")
    topo, ports = run.sim.topo, run.ports()
    for truth in _truths(run, "node_network"):
        node = run.node_index(truth.entity.removeprefix("node:"))
        assert {a for a in truth.affected if a.startswith("nic:")} == {
            topo.nic_entity(node, r) for r in range(topo.gpus_per_node)}
        job = next(a.removeprefix("job:") for a in truth.affected if a.startswith("job:"))
        lo, hi = _window(run, truth)
        placed = [e.payload for e in run.of(c.JobPlaced)
                  if e.payload.job == job and e.time_us <= truth.start_us][-1]
        peer = next(run.node_index(n) for n in placed.nodes
                    if run.node_index(n) != node and run.sim.tel.node_up[run.node_index(n)])

        def increase(n: int, rail: int, column: str, lo: int = lo, hi: int = hi) -> float:
            p = int(topo.down_port[n, rail])
            ts, values = run.series(ports, column, switch=int(topo.port_switch[p]),
                                    port=int(topo.port_number[p]))
            values = values[(ts >= lo) & (ts < hi)]
            return float(values[-1] - values[0])

        for column in ("xmit_data", "rcv_data"):
            mine = [increase(node, r, column) for r in range(topo.gpus_per_node)]
            theirs = [increase(peer, r, column) for r in range(topo.gpus_per_node)]
            assert max(mine) / min(mine) < 1.1, mine  # no rail lags against its node
            for a, b in zip(mine, theirs, strict=True):
                assert 0.35 <= a / b <= 0.7, (column, a / b)
        for column in ("symbol_error", "rcv_errors", "link_downed", "link_error_recovery"):
            assert all(increase(node, r, column) == 0 for r in range(topo.gpus_per_node))
        ratio = _job_slowdown(run, truth)
        assert ratio is None or ratio > 1.05, ratio


def test_the_family_runs_every_kind_twice(simulate_run) -> None:
    run = simulate_run("failslow")
    kinds = sorted(t.detail.split(":")[0] for t in run.truth)
    assert kinds == sorted([*FAILSLOW_KINDS] * 2)
    assert all(t.category == FAILSLOW_KINDS[t.detail.split(":")[0]] for t in run.truth)
    assert not run.of(c.JobFailed)  # fail-slow: nothing crashes
