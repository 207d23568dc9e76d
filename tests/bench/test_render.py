"""The benchmark report is rendered from data: BENCHMARKS.md's tables and plots come from the
suite's JSON (a real quick run, trimmed, in tests/fixtures/bench/). No timing is asserted."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
FIXTURE = Path(__file__).parents[1] / "fixtures" / "bench" / "results.json"
sys.path.insert(0, str(BENCH))

import polars_detect  # noqa: E402
import render  # noqa: E402
import stages  # noqa: E402


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    tmp_path = tmp_path_factory.mktemp("bench")
    results = tmp_path / "results.json"
    shutil.copy(FIXTURE, results)
    doc = tmp_path / "BENCHMARKS.md"
    render.render(results, doc)
    return doc.read_text(), tmp_path


def test_every_section_and_table_is_rendered(rendered: tuple[str, Path]) -> None:
    text, _ = rendered
    for heading in ("## Goals", "## Machine, versions, settings",
                    "## Producing: the generator vs the broker's ceiling",
                    "## Landing in DuckDB", "## Analysis: fleetlog analyze vs",
                    "## Scaling:", "### Where cost grows faster than linearly",
                    "## Scale-out", "## Memory while following", "## Sizing inputs"):
        assert heading in text, heading
    for row in ("| `fleetlog ingest --topics gpu` |", "| kafka-consumer-perf-test (no decode",
                "| hand-written confluent-kafka consumer -> DuckDB |",
                "| quixstreams Application + BatchingSink -> DuckDB |",
                "| kafka-producer-perf-test (same count and size of records) |",
                "| quixstreams | 3.28.1 |", "| CPU | 2 cores, AMD EPYC |"):
        assert row in text, row


def test_numbers_come_from_the_json(rendered: tuple[str, Path]) -> None:
    text, _ = rendered
    data = json.loads(FIXTURE.read_text())
    landed = data["landing"]["clients"]["fleetlog ingest"]["median"]["gpu_samples_per_s"]
    assert f"| `fleetlog ingest --topics gpu` | {round(landed):,} |" in text
    assert "yes (39 of 39 / 39)" in text  # the fixture's detections agree
    assert "**not met**" in text  # the fixture's ingest rate is below 1 M/s


def test_plots_are_written_and_linked(rendered: tuple[str, Path]) -> None:
    text, folder = rendered
    for name in ("produce", "landing", "scaling", "memory", "scaleout", "soak"):
        png = folder / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name}.png)" in text


def test_a_missing_step_leaves_its_section_out(tmp_path: Path) -> None:
    data = json.loads(FIXTURE.read_text())
    for key in ("landing", "scaleout", "soak", "day"):
        data.pop(key)
    data["errors"] = [{"step": "landing", "error": "boom\nquixstreams exited 1", "trace": ""}]
    results = tmp_path / "results.json"
    results.write_text(json.dumps(data))
    render.render(results, tmp_path / "B.md")
    text = (tmp_path / "B.md").read_text()
    assert "## Landing in DuckDB" not in text
    assert "- landing: `quixstreams exited 1`" in text


def test_medians_exponents_and_slopes() -> None:
    runs = [{"a": 1, "b": {"x": 1.0}, "load": [1]}, {"a": 5, "b": {"x": 3.0}},
            {"a": 3, "b": {"x": 2.0}}]
    assert stages.summarize(runs) == {"a": 3, "b": {"x": 2.0}}
    assert render.exponent(1, 10, 2.0, 20.0) == pytest.approx(1.0)
    assert render.exponent(1, 10, 2.0, 200.0) == pytest.approx(2.0)
    flat = stages.rss_fit([(t, 300.0) for t in range(0, 600, 5)], 600)
    assert flat["slope_mb_per_min"] == 0
    rising = stages.rss_fit([(t, 300.0 + t / 60) for t in range(0, 600, 5)], 600)
    assert rising["slope_mb_per_min"] == pytest.approx(1.0)


def test_agreement_counts_each_side() -> None:
    a = [("xid", "gpu:n1/0", 10), ("link_down", "link:s/1", 20)]
    b = [("xid", "gpu:n1/0", 10), ("link_down", "link:s/1", 30)]
    out = polars_detect.agreement(a, b)
    assert (out["fleetlog"], out["polars"], out["both"], out["agree"]) == (2, 2, 1, False)
    assert out["by_kind"]["link_down"] == {"fleetlog": 1, "polars": 1, "both": 0}
    assert polars_detect.agreement(a, list(a))["agree"]
