"""Every fault category on its named scenario (from the generator, `fleetlog simulate`): the
analysis finds each injected fault, names its category and root entity first, and raises no
false alarm. Small clusters and a few simulated hours keep this under a minute; the evaluation
figures (docs/analysis.md) come from other seeds and larger clusters."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetlog.analysis.evaluate import evaluate_stores
from fleetlog.generators.config import SimConfig
from fleetlog.generators.run import simulate
from fleetlog.ingest.contract import ALL_CATEGORIES

SEED = 3  # the evaluation figures use other seeds


def _run(tmp_path: Path, scenario: str, **kwargs: float) -> dict:
    db = tmp_path / f"{scenario}.duckdb"
    config = SimConfig(nodes=int(kwargs.pop("nodes", 32)), hours=kwargs.pop("hours", 3.0),
                       seed=SEED, scenario=scenario, **kwargs)
    simulate(config, f"duckdb:{db}")
    return evaluate_stores([[str(db)]])


@pytest.mark.slow
@pytest.mark.parametrize("category", ALL_CATEGORIES)
def test_each_category_on_its_scenario(tmp_path: Path, category: str) -> None:
    report = _run(tmp_path, category)
    assert report["faults"] >= 1
    by_category = report["by_category"]
    assert by_category[category]["recall"] == 1.0, report["missed"]
    assert by_category[category]["ac1"] == 1.0, report["wrong_root"]
    assert report["false_alarms"] == 0 and report["duplicates"] == 0, (
        report["false_alarm_examples"])


@pytest.mark.slow
def test_quiet_cluster_raises_no_alarm(tmp_path: Path) -> None:
    report = _run(tmp_path, "quiet", nodes=64, hours=6.0)
    assert report["faults"] == 0
    assert report["incidents"] == 0, report["false_alarm_examples"]


@pytest.mark.slow
def test_overlapping_faults(tmp_path: Path) -> None:
    report = _run(tmp_path, "mixed", nodes=64, hours=4.0, fault_rate=100.0)
    assert report["faults"] >= 8
    assert report["f1"] >= 0.9, (report["missed"], report["false_alarm_examples"])
    assert report["overall"]["ac1"] >= 0.9, report["wrong_root"]
