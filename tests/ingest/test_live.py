"""The live display and the summary of `fleetlog ingest`."""

from __future__ import annotations

import io
import time

from rich.console import Console

from fleetlog.cli.live import LiveIngest
from fleetlog.ingest.pipeline import IngestStats
from fleetlog.ingest.store.writer import BatchResult


def _stats() -> IngestStats:
    stats = IngestStats(db="/x/fleet.duckdb", source="kafka:127.0.0.1:9092", group="g")
    stats.first_record_at = time.monotonic() - 2
    for _ in range(3):
        stats.add(BatchResult(events=100, duplicates=2, dead_letters=1,
                              rows={"event_log": 100, "gpu_samples_raw": 3200}))
        time.sleep(0.01)
    stats.lag = {f"fleetlog.gpu[{p}]": p * 10 for p in range(20)}
    return stats


def test_live_display_shows_rate_lag_and_dead_letters():
    out = io.StringIO()
    Console(file=out, width=100).print(LiveIngest(enabled=True, max_partitions=5).render(_stats()))
    text = out.getvalue()
    assert "GPU samples/s" in text and "dead letters" in text
    assert "lag fleetlog.gpu[19]" in text and "15 more partitions" in text


def test_live_display_is_quiet_off_a_terminal():
    with LiveIngest(enabled=False) as live:
        live.update(_stats())  # nothing to draw, nothing raised


def test_summary_sums_lag_for_people_and_details_it_for_scripts():
    stats = _stats()
    people, scripts = stats.to_json(detail=False), stats.to_json()
    assert people["lag"] == sum(p * 10 for p in range(20)) and people["partitions"] == 20
    assert scripts["lag"]["fleetlog.gpu[3]"] == 30
    assert scripts["events"] == 300 and scripts["gpu_samples"] == 9600
    assert scripts["events_per_s"] > 0 and scripts["peak_rss_mb"] > 0
