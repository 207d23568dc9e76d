"""Honest on whole simulated runs (issue #18): a healthy cluster over 10,000 node-hours raises
no incident; the confidence of incidents is calibrated (expected calibration error on a held-out
seed under 0.05); eval refuses a store without ground truth."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetlog.analysis import calibration
from fleetlog.analysis.evaluate import NoGroundTruth, evaluate_stores
from fleetlog.generators.config import SimConfig
from fleetlog.generators.run import simulate
from fleetlog.ingest import contract as c
from fleetlog.ingest.store.writer import land


@pytest.mark.slow
def test_quiet_cluster_over_ten_thousand_node_hours_raises_no_incident(tmp_path: Path) -> None:
    db = tmp_path / "quiet.duckdb"
    # 128 nodes x 80 h, scraped every minute (the embedded mode, no broker): 10,240 node-hours.
    simulate(SimConfig(nodes=128, hours=80.0, interval_s=60.0, seed=7, scenario="quiet"),
             f"duckdb:{db}")
    report = evaluate_stores([[str(db)]])
    assert report["node_hours"] >= 10_000
    assert report["faults"] == 0
    assert report["incidents"] == 0, report["false_alarm_examples"]


@pytest.mark.slow
def test_confidence_is_calibrated_on_a_held_out_seed(tmp_path: Path) -> None:
    stores = []
    for scenario, nodes, hours, rate, shapes in calibration.HELD_OUT_RUNS:
        db = tmp_path / f"{scenario}-{shapes}.duckdb"
        simulate(SimConfig(nodes=nodes, hours=hours, seed=calibration.HELD_OUT_SEED,
                           scenario=scenario, fault_rate=rate, shapes=shapes), f"duckdb:{db}")
        stores.append([str(db)])
    report = evaluate_stores(stores)
    reliability = report["calibration"]
    assert reliability["incidents"] == report["incidents"] >= 20
    assert sum(band["incidents"] for band in reliability["bands"]) == report["incidents"]
    assert reliability["ece"] <= calibration.MAX_ECE, reliability


def test_eval_refuses_a_store_without_ground_truth(tmp_path: Path) -> None:
    db = tmp_path / "imported.duckdb"
    land(db, [c.make_event(c.RackRegistered(rack="r1", region="eu", pdu="p", cooling_zone="z"),
                           time_us=1_767_571_200_000_000, source="fleetlog-import")])
    with pytest.raises(NoGroundTruth, match="no ground truth"):
        evaluate_stores([[str(db)]])


def test_reliability_table_and_ece() -> None:
    table = calibration.reliability([(0.95, True), (0.95, True), (0.95, False), (0.55, False)])
    assert [b["incidents"] for b in table["bands"]] == [1, 3]
    assert table["bands"][1]["share_correct"] == pytest.approx(2 / 3, abs=1e-4)
    # ECE: (1 x |0.55 - 0| + 3 x |0.95 - 2/3|) / 4
    assert table["ece"] == pytest.approx((0.55 + 3 * (0.95 - 2 / 3)) / 4, abs=1e-4)


def test_fit_is_monotone_and_shrinks_thin_bands() -> None:
    rows = [("network", 0.95, True)] * 40 + [("network", 0.65, False)] * 2
    table = calibration.fit(rows)["network"]
    assert table == sorted(table)
    assert 0.0 < table[1] < table[3] < 1.0


def test_the_table_tells_root_kinds_of_one_category_apart() -> None:
    switch, link = calibration.key("network", "switch:leaf-1"), calibration.key("network",
                                                                                "link:leaf-1/3")
    rows = [(switch, 0.95, True)] * 20 + [(link, 0.95, True)] * 10 + [(link, 0.95, False)] * 10
    table = calibration.fit(rows)
    assert table[switch][3] > 0.9 > table["network"][3] > table[link][3] > 0.4
    # a root kind the fit never saw falls back to its category's row
    assert calibration.key("network", "nic:n1/0") not in table
