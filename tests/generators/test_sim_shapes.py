"""Symptom shapes: the template stays the default (and keeps its event ids), ``--shapes wide``
draws each fault's shape from the documented ranges, deterministic per seed and varied across
seeds; docs/faults.md quotes every range the code draws from."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fleetlog.cli.main import cli
from fleetlog.generators import confounders, failslow, wide
from fleetlog.generators.config import SimConfig, SimulationError
from fleetlog.generators.faults import FAILSLOW_KINDS
from fleetlog.generators.simulator import Simulator
from fleetlog.ingest import contract as c

S = 1_000_000
FAULTS_DOC = Path(__file__).resolve().parents[2] / "docs" / "faults.md"


def _run(**params: object) -> list[c.Envelope]:
    return [e for chunk in Simulator(SimConfig(**params)).chunks() for e in chunk]  # type: ignore[arg-type]


def _digest(events: list[c.Envelope]) -> str:
    h = hashlib.sha256()
    for event in events:
        h.update(c.encode(event))
    return h.hexdigest()


def _truth(events: list[c.Envelope]) -> list[c.FaultInjected]:
    return [e.payload for e in events if isinstance(e.payload, c.FaultInjected)]


def test_the_template_is_the_default_and_keeps_its_ids() -> None:
    # the tags the runs made before --shapes existed carry (so stored runs keep their ids)
    assert SimConfig().run_tag() == SimConfig(shapes="template").run_tag() == "de8c9977"
    assert SimConfig(nodes=8, scenario="gpu_hw").run_tag() == "3d8bf365"
    assert SimConfig(shapes="wide").run_tag() != SimConfig().run_tag()
    with pytest.raises(SimulationError, match="--shapes"):
        SimConfig(shapes="narrow")


@pytest.mark.slow
def test_wide_shapes_are_deterministic_per_seed() -> None:
    params = {"nodes": 32, "hours": 1.0, "scenario": "mixed", "fault_rate": 100.0,
              "shapes": "wide"}
    first = _run(seed=5, **params)
    assert _digest(first) == _digest(_run(seed=5, **params))
    assert _digest(first) != _digest(_run(seed=6, **params))
    assert len(_truth(first)) >= 6


def _hbm_leads(shapes: str, seeds: range) -> list[float]:
    """Minutes from each HBM fault's first symptom to its DBE XID."""
    leads = []
    for seed in seeds:
        events = _run(nodes=16, hours=2.0, seed=seed, scenario="gpu_hbm", shapes=shapes)
        xids = [e for e in events if isinstance(e.payload, c.XidReported)
                and e.payload.xid in (48, 63, 140)]
        for truth in _truth(events):
            node, gpu = truth.entity.removeprefix("gpu:").split("/")
            first = min(e.time_us for e in xids
                        if e.payload.node == node and e.payload.gpu == int(gpu))
            leads.append((first - truth.start_us) / 60 / S)
    return leads


@pytest.mark.slow
def test_wide_precursors_vary_across_seeds_and_leave_the_template_range() -> None:
    template = _hbm_leads("template", range(1, 4))
    assert all(9.5 <= lead <= 61 for lead in template), template
    leads = _hbm_leads("wide", range(1, 7))
    assert len(leads) >= 12
    # outside the template's 10-60 min: missing precursors (0), fast ramps, long ones
    assert sum(not 9.5 <= lead <= 61 for lead in leads) >= 3, leads
    assert max(leads) / max(min(leads), 0.1) > 5, leads


@pytest.mark.slow
def test_wide_nic_error_rates_span_decades() -> None:
    """A NIC's receive errors: from a trickle to a flood, or none before the port dies."""
    totals = []
    for seed in range(1, 7):
        events = _run(nodes=16, hours=2.0, seed=seed, scenario="nic", shapes="wide")
        sim_truth = _truth(events)
        assert sim_truth
        total = 0.0
        for e in events:
            if isinstance(e.payload, c.PortSampled):
                values = np.frombuffer(e.payload.columns["rcv_errors"], dtype="<f8")
                total = max(total, float(values.max()))
        totals.append(total)
    assert max(totals) > 20 * max(min(totals), 1.0), totals


def _doc_rows() -> dict[tuple[str, str], str]:
    rows = {}
    for line in FAULTS_DOC.read_text("utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[1].startswith("`"):
            rows[(cells[0].strip("`"), cells[1].strip("`"))] = cells[3]
    return rows


def test_faults_doc_quotes_every_range_the_code_draws_from() -> None:
    rows = _doc_rows()
    tables = [wide.RANGES, failslow.RANGES, {"confounder": confounders.RANGES}]
    for table in tables:
        for owner, knobs in table.items():
            for knob, drawn in knobs.items():
                assert rows.get((owner, knob)) == drawn.doc(), (owner, knob, drawn.doc())


def test_faults_doc_names_each_failslow_kind_with_its_category() -> None:
    text = FAULTS_DOC.read_text("utf-8")
    for kind, category in FAILSLOW_KINDS.items():
        assert f"| `{kind}` | `{category}` |" in text, kind
        assert category in c.ALL_CATEGORIES


def test_the_command_takes_shapes_and_lists_the_new_scenarios() -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["simulate", "--nodes", "32", "--duration", "0.5h", "--seed", "2",
                                 "--scenario", "failslow", "--shapes", "wide", "--to", "null:",
                                 "--json"])
    assert result.exit_code == 0, result.output
    assert f'"faults": {2 * len(FAILSLOW_KINDS)}' in result.output  # each kind twice
    result = runner.invoke(cli, ["simulate", "--nodes", "8", "--shapes", "narrow", "--to",
                                 "null:"])
    assert result.exit_code == 2 and "--shapes" in result.output
    listed = runner.invoke(cli, ["scenarios"]).output
    for name in ("failslow", *(f"failslow_{k}" for k in FAILSLOW_KINDS), "quiet_confounders"):
        assert f'"scenario": "{name}"' in listed, name
