"""The wide shapes of the job-level categories and of a dying leaf switch: each drawn shape is
emitted (read back from the events, as a detector would), within the documented ranges; and the
shape tables themselves: one set of steps, a fixed range or a certain share draws nothing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fleetlog.generators.job_symptoms import HANG_KILLS, NCCL_WATCHDOG, SOFTWARE_FAILURES
from fleetlog.generators.shapes import Range, Shape
from fleetlog.generators.symptoms import SYMPTOMS
from fleetlog.generators.template import TEMPLATE
from fleetlog.generators.wide import RANGES, WIDE
from fleetlog.ingest import contract as c

S = 1_000_000
SEEDS = (1, 2, 3)  # several runs, so that every share of the shapes comes up


# ---- the tables ------------------------------------------------------------------------------


def test_a_fixed_range_or_a_certain_share_draws_nothing() -> None:
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    shape = Shape("t", {"x": {"fixed": Range(15, 15, "s"), "minutes": Range(2, 2, "min", 60)}},
                  {"always": 1.0, "never": 0.0})
    assert shape.draw(rng, "x", "fixed") == 15 and shape.draw(rng, "x", "minutes") == 120
    assert shape.chance(rng, "always") and not shape.chance(rng, "never")
    assert not shape.chance(rng, "not given")
    assert rng.bit_generator.state == state


def test_counts_are_whole_and_rates_per_hour_become_per_scrape() -> None:
    rng = np.random.default_rng(1)
    flaps = {Range(1, 8, "flaps").draw(rng) for _ in range(400)}
    assert flaps == {float(n) for n in range(1, 9)}
    shape = Shape("t", {"x": {"r": Range(360, 360, "per hour"), "s": Range(2, 2, "per scrape")}},
                  {})
    assert shape.rate(rng, "x", "r", 10.0) == pytest.approx(1.0)
    assert shape.rate(rng, "x", "s", 10.0) == 2.0


def test_every_category_has_wide_ranges_and_both_shapes_share_the_steps() -> None:
    assert set(WIDE.ranges) == set(SYMPTOMS)
    assert set(TEMPLATE.ranges) <= set(SYMPTOMS)
    for category in ("software", "sdc", "nccl_hang"):
        assert RANGES[category], category
    assert {k for k in RANGES["network"] if k.startswith("switch_")} >= {
        "switch_lead", "switch_stagger", "switch_ports"}
    # the template fixes every yes/no: nothing in it is left to a share
    assert all(p in (0.0, 1.0) for p in TEMPLATE.shares.values())


# ---- runs ------------------------------------------------------------------------------------


def _truths(simulate_run, scenario: str, category: str,
            seeds: tuple[int, ...] = SEEDS) -> list[tuple[object, c.FaultInjected]]:
    """(run, truth) of every ``category`` fault in wide runs of ``scenario`` on ``seeds``."""
    out = []
    for seed in seeds:
        run = simulate_run(scenario, seed=seed, hours=3.0, fault_rate=30.0, shapes="wide")
        out += [(run, t) for t in run.truth if t.category == category]
    assert out, f"no {category} fault"
    return out


def _job(run, job: str, kind: type[c.Payload]) -> list[c.Envelope]:
    return [e for e in run.of(kind) if e.payload.job == job]


def _first_failure(run, t: c.FaultInjected) -> c.Envelope:
    job = t.entity.removeprefix("job:")
    return next(e for e in _job(run, job, c.JobFailed) if e.time_us >= t.start_us)


def _with(truths, text: str):
    found = [(run, t) for run, t in truths if text in t.detail]
    assert found, f"no fault shaped '{text}' in {[t.detail for _r, t in truths]}"
    return found


def _losses(run, job: str, lo: int, hi: int) -> list[float]:
    return [e.payload.loss for e in _job(run, job, c.JobStepReported)
            if lo <= e.time_us < hi and e.payload.loss is not None]


@pytest.mark.slow
def test_software_crashes_at_once_or_after_a_spike_a_stall_or_a_slowdown(simulate_run) -> None:
    truths = _truths(simulate_run, "software", "software")
    reasons = {reason for _code, reason in SOFTWARE_FAILURES.values()}
    for run, t in truths:
        failed = _first_failure(run, t)
        assert failed.payload.reason in reasons and failed.time_us == t.end_us
    for _run, t in _with(truths, "no precursor"):
        assert t.end_us == t.start_us
    lead = RANGES["software"]["lead"]
    shaped = [(run, t) for run, t in truths if "no precursor" not in t.detail]
    for _run, t in shaped:
        assert lead.lo * 60 - 11 <= (t.end_us - t.start_us) / S <= lead.hi * 60 + 11, t.detail
    for run, t in _with(truths, "loss x"):
        job = t.entity.removeprefix("job:")
        before = _losses(run, job, t.start_us - 600 * S, t.start_us)
        during = _losses(run, job, t.start_us, t.end_us)
        assert during and min(during) > 1.4 * max(before), t.detail
    for run, t in _with(truths, "stalled"):
        job = t.entity.removeprefix("job:")
        steps = [e for e in _job(run, job, c.JobStepReported)
                 if t.start_us <= e.time_us < t.end_us]
        assert not steps, t.detail  # no step between the stall and the exception
    for run, t in _with(truths, "slower"):
        job = t.entity.removeprefix("job:")
        step = [e.payload.step_time_s for e in _job(run, job, c.JobStepReported)]
        times = [e.time_us for e in _job(run, job, c.JobStepReported)]
        slow = [s for s, at in zip(step, times, strict=True) if t.start_us < at < t.end_us]
        normal = [s for s, at in zip(step, times, strict=True) if at < t.start_us]
        if slow and normal:
            assert np.median(slow) >= 1.08 * np.median(normal), t.detail


@pytest.mark.slow
def test_sdc_magnitude_onset_and_the_sram_hint_vary(simulate_run) -> None:
    truths = _truths(simulate_run, "sdc", "sdc")
    spans = []
    for run, t in truths:
        job = t.entity.removeprefix("job:")
        failed = _first_failure(run, t)
        assert failed.payload.reason in ("loss is NaN", "sdc check mismatch")
        bad = [e.payload.loss for e in _job(run, job, c.JobStepReported)
               if t.start_us <= e.time_us <= t.end_us]
        assert bad and (t.detail.startswith("nan") == all(
            v is None or math.isnan(v) for v in bad))
        spans.append(len(bad))
    assert max(spans) >= 3 * min(spans), spans  # checks that fail after 1 report or many
    for run, t in _with(truths, "SRAM corrections on"):
        gpu = t.detail.split("SRAM corrections on ")[1].split(" ")[0]
        node, index = gpu.removeprefix("gpu:").split("/")
        ts, sram = run.series(run.gpu(), "sram_ecc_total", node=run.node_index(node),
                              gpu=int(index))
        before = sram[ts < t.start_us]
        assert len(before) and 1 <= before[-1] - before[0] <= 4, (t.detail, before[-3:])
        # corrected errors only: no XID on that GPU's node before the loss went bad
        assert not [e for e in run.of(c.XidReported) if e.payload.node == node
                    and e.payload.xid not in (13, 31, 43)
                    and t.start_us - 900 * S <= e.time_us <= t.end_us]
    drift = [t for _e, t in truths if "reached over" in t.detail
             and not t.detail.split("reached over ")[1].startswith("1 ")]
    assert drift, [t.detail for _e, t in truths]


@pytest.mark.slow
def test_nccl_hang_slow_ranks_first_timeouts_vary_and_the_line_may_be_missing(simulate_run) -> None:
    truths = _truths(simulate_run, "nccl_hang", "nccl_hang", (1, 2, 6, 7))
    kills = {reason for _code, reason in HANG_KILLS}
    timeout = RANGES["nccl_hang"]["timeout"]
    for run, t in truths:
        failed = _first_failure(run, t)
        if "no timeout line" in t.detail:
            assert failed.payload.reason in kills
        else:
            assert (failed.payload.exit_code, failed.payload.reason) == NCCL_WATCHDOG
        assert failed.time_us == t.end_us
    for run, t in _with(truths, "slower for"):
        job = t.entity.removeprefix("job:")
        steps = [e for e in _job(run, job, c.JobStepReported) if e.time_us >= t.start_us]
        assert steps and steps[0].time_us < t.end_us  # it still steps (slowly) before the hang
    plain = [t for _e, t in truths if "slower for" not in t.detail]
    for t in plain:
        assert timeout.lo * 60 - 11 <= (t.end_us - t.start_us) / S <= timeout.hi * 60 + 11
    _with(truths, "no timeout line")
    assert len({round((t.end_us - t.start_us) / 60 / S) for t in plain}) >= 2


def _leaf_down_scrapes(run, leaf: str) -> list[int]:
    """The scrapes at which the ports of ``leaf`` were first seen down."""
    frame = run.ports()
    mine = frame["switch"] == run.sim.topo.switch_names.index(leaf)
    down = mine & (frame["link_state"] == c.PORT_STATE_DOWN)
    first: dict[int, int] = {}
    for port, ts in zip(frame["port"][down].tolist(), frame["ts"][down].tolist(), strict=True):
        first[port] = min(ts, first.get(port, ts))
    return sorted(set(first.values()))


@pytest.mark.slow
def test_a_dying_leaf_switch_may_warn_and_lose_its_ports_over_minutes(simulate_run) -> None:
    truths = [(run, t) for run, t in _truths(simulate_run, "network", "network")
              if t.entity.startswith("switch:")]
    assert len(truths) == len(SEEDS)
    staggered = _with(truths, "ports down over")
    for run, t in staggered:
        scrapes = _leaf_down_scrapes(run, t.entity.removeprefix("switch:"))
        assert len(scrapes) >= 2 and scrapes[-1] - scrapes[0] <= 250 * S, t.detail
    for run, t in truths:
        if "ports down over" not in t.detail:
            assert len(_leaf_down_scrapes(run, t.entity.removeprefix("switch:"))) == 1
    for run, t in _with(truths, "symbol errors on"):
        leaf = t.entity.removeprefix("switch:")
        first_down = _leaf_down_scrapes(run, leaf)[0]
        assert t.start_us < first_down - 25 * S  # the errors came first: the truth's onset
        frame = run.ports()
        mine = frame["switch"] == run.sim.topo.switch_names.index(leaf)
        window = mine & (frame["ts"] >= t.start_us) & (frame["ts"] < first_down)
        assert frame["symbol_error"][window].max() > frame["symbol_error"][
            mine & (frame["ts"] < t.start_us)].max()

