"""The llama3 scenario's fault mix matches Table 5 of the Llama 3 paper, and the simulator injects
every planned fault with its planned category."""

from __future__ import annotations

from collections import Counter

import pytest
from scipy.stats import chisquare

from fleetlog.generators.config import SimConfig, SimulationError
from fleetlog.generators.faults import (
    LLAMA3_COUNTS,
    SCENARIOS,
    VARIANTS,
    expected_faults,
    plan_faults,
)
from fleetlog.ingest.contract import ALL_CATEGORIES, FAULT_CATEGORIES


def test_llama3_mix_of_2000_plus_faults_matches_table_5() -> None:
    # 2,048 nodes for 30 days at 10x the base hazard: ~3,000 faults.
    config = SimConfig(nodes=2048, hours=24 * 30, seed=5, scenario="llama3", fault_rate=10)
    plan = plan_faults(config, random_state=5)
    assert len(plan) >= 2000
    seen = Counter(f.category for f in plan)
    categories = sorted(LLAMA3_COUNTS)
    total = sum(LLAMA3_COUNTS.values())
    expected = [LLAMA3_COUNTS[k] / total * len(plan) for k in categories]
    result = chisquare([seen[k] for k in categories], expected)
    assert result.pvalue > 0.01, (dict(seen), result)
    assert set(seen) == set(FAULT_CATEGORIES)


def test_the_hazard_scales_with_nodes_time_and_fault_rate() -> None:
    base = SimConfig(nodes=1000, hours=24.0)
    assert expected_faults(base) == pytest.approx(5.0)  # 5e-3 per node-day
    assert expected_faults(SimConfig(nodes=1000, hours=24.0, fault_rate=3)) == pytest.approx(15)
    assert expected_faults(SimConfig(nodes=1000, hours=48.0, base_hazard=3.8e-3)) \
        == pytest.approx(7.6)
    assert plan_faults(SimConfig(nodes=1000, hours=24.0, fault_rate=0), 1) == []
    assert plan_faults(SimConfig(nodes=1000, hours=240.0, scenario="quiet"), 1) == []


def test_plans_are_deterministic_and_in_time_order() -> None:
    config = SimConfig(nodes=512, hours=48, scenario="mixed", fault_rate=5)
    first, second = plan_faults(config, 9), plan_faults(config, 9)
    assert first == second
    assert [f.at_us for f in first] == sorted(f.at_us for f in first)
    assert all(config.start_us <= f.at_us < config.end_us for f in first)
    assert all(f.variant in dict(VARIANTS[f.category]) for f in first)


def test_every_planned_fault_is_injected_with_its_category(simulate_run) -> None:
    run = simulate_run("llama3", nodes=128, hours=3.0, fault_rate=150.0, seed=4)
    sim = run.sim
    planned = Counter(f.category for f in sim.plan)
    assert sum(planned.values()) >= 15
    injector = sim.injector
    assert injector.not_injected == 0
    assert injector.reported + injector.unobserved == len(sim.plan)
    reported = Counter(t.category for t in run.truth)
    assert sum(reported.values()) == injector.reported
    assert all(reported[k] <= planned[k] for k in reported)
    assert injector.unobserved <= 0.1 * len(sim.plan)


def test_scenarios_cover_every_category() -> None:
    required = {"llama3", "quiet", "rack_power", "cooling", "storage", "mixed",
                *FAULT_CATEGORIES}
    assert required <= set(SCENARIOS)
    for category in ALL_CATEGORIES:
        assert {s.category for s in SCENARIOS[category].scripted} == {category}
        assert SCENARIOS[category].weights == {category: 1.0}
    assert SCENARIOS["quiet"].weights == {} and not SCENARIOS["quiet"].scripted
    with pytest.raises(SimulationError, match="unknown scenario"):
        plan_faults(SimConfig(scenario="nope"))
