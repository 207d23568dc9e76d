"""quiet_confounders: look-alikes of faults and no truth. Its random streams other than the
confounders' own are those of ``quiet`` with the same seed, so the two runs differ exactly by
what the confounders add: benign XIDs, isolated counter blips, a rack warming a few degrees."""

from __future__ import annotations

import numpy as np

from fleetlog.generators.confounders import BENIGN_XIDS
from fleetlog.ingest import contract as c


def _xids(run) -> set[tuple[int, str, int | None, int]]:
    return {(e.time_us, e.payload.node, e.payload.gpu, e.payload.xid)
            for e in run.of(c.XidReported)}


def _aligned(run, column: str) -> np.ndarray:
    """``column`` per (scrape, GPU), in a fixed order (every GPU reports in these runs)."""
    g = run.gpu()
    order = np.lexsort((g["gpu"], g["node"], g["ts"]))
    return g[column][order]


def test_no_truth_and_only_benign_xids(simulate_run) -> None:
    quiet, mixed = simulate_run("quiet"), simulate_run("quiet_confounders")
    assert not mixed.truth and not mixed.of(c.JobFailed)
    added = _xids(mixed) - _xids(quiet)
    assert len(added) >= 9  # a burst on a whole node plus single ones
    assert {xid for *_, xid in added} <= set(BENIGN_XIDS)
    by_time = {}
    for t, node, _gpu, _xid in added:
        by_time.setdefault((t, node), set()).add(_gpu)
    assert max(len(gpus) for gpus in by_time.values()) == 8  # one node, all its GPUs at once


def test_a_whole_rack_warms_a_few_degrees_and_nothing_else_moves(simulate_run) -> None:
    quiet, mixed = simulate_run("quiet"), simulate_run("quiet_confounders")
    assert len(quiet.gpu()["ts"]) == len(mixed.gpu()["ts"])
    warmer = _aligned(mixed, "gpu_temp_c") - _aligned(quiet, "gpu_temp_c")
    g = mixed.gpu()
    order = np.lexsort((g["gpu"], g["node"], g["ts"]))
    nodes = g["node"][order]
    warmed = np.unique(nodes[warmer > 1.5])
    assert len(warmed) >= 1
    racks = {mixed.sim.topo.rack_names[int(mixed.sim.topo.node_rack[n])] for n in warmed}
    for rack in racks:  # every node of a warming rack warms: the rack, not one node
        span = mixed.sim.topo.rack_nodes(mixed.sim.topo.rack_names.index(rack))
        assert set(range(span.start, span.stop)) <= set(warmed.tolist())
    assert 1.5 < warmer.max() <= 6.0 and warmer.min() >= -1.0
    assert np.array_equal(_aligned(mixed, "throttle_reasons"), _aligned(quiet, "throttle_reasons"))
    assert np.array_equal(_aligned(mixed, "sm_clock_mhz"), _aligned(quiet, "sm_clock_mhz"))


def _per_part(frame: dict[str, np.ndarray], who: str, index: str, column: str) -> np.ndarray:
    """``column`` as one row per part (switch/node, port/GPU) and one column per scrape."""
    order = np.lexsort((frame["ts"], frame[index], frame[who]))
    scrapes = len(np.unique(frame["ts"]))
    return frame[column][order].reshape(-1, scrapes)


def test_counter_blips_are_isolated(simulate_run) -> None:
    quiet, mixed = simulate_run("quiet"), simulate_run("quiet_confounders")
    blips = 0
    for frame, who, index, columns in (
            ("gpu", "node", "gpu", ("ecc_sbe_vol_total", "pcie_replays",
                                    "nvlink_crc_flit_errors")),
            ("ports", "switch", "port", ("symbol_error", "rcv_errors"))):
        for column in columns:
            extra = (_per_part(getattr(mixed, frame)(), who, index, column)
                     - _per_part(getattr(quiet, frame)(), who, index, column))
            steps = np.diff(extra, axis=1)
            assert (steps >= 0).all()  # counters: only ever up
            rises = np.count_nonzero(steps, axis=1)
            assert rises.max() <= 1  # once on a part, never rising again
            assert extra.max() <= 30  # a handful, not a fault's rise
            blips += int(rises.sum())
    assert blips >= 3
