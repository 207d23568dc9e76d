"""`fleetlog analyze --follow`: consume the pipeline's topics, analyze as events land, publish."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fleetlog.analysis.pipeline import analyze_store
from fleetlog.follow import follow
from fleetlog.generators.config import SimConfig
from fleetlog.generators.run import simulate
from fleetlog.ingest import contract as c
from fleetlog.ingest.store import open_store


@pytest.mark.slow
@pytest.mark.kafka
def test_follow_finds_what_batch_finds(tmp_path: Path, kafka_settings: Any,
                                       unique_name: Any) -> None:
    from kafka import KafkaConsumer

    prefix = unique_name("follow")
    simulate(SimConfig(nodes=16, hours=1.0, seed=4, scenario="gpu_hw"),
             f"kafka://{kafka_settings.bootstrap}", topic_prefix=prefix)
    db = tmp_path / "live.duckdb"
    stats = follow(db, kafka_settings, topic_prefix=prefix, every_s=1.0, idle_exit_s=6.0)
    summary = stats.summary()
    assert summary["events_landed"] > 1000
    assert summary["incidents"] >= 1
    assert summary["event_lag_median_s"] is not None
    con = open_store(db, read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM truth_faults").fetchone() == (0,)  # never read
        stored = {r[0] for r in con.execute("SELECT incident_id FROM incidents").fetchall()}
        batch = {i.incident_id for i in analyze_store(con).incidents}
    finally:
        con.close()
    opened = {row["incident_id"] for row in stats.incidents}
    assert stored == opened
    assert batch <= opened  # streaming saw at least what one batch pass sees
    consumer = KafkaConsumer(f"{prefix}.analysis", bootstrap_servers=kafka_settings.bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=10_000,
                             group_id=unique_name("g"))
    published = set()
    for record in consumer:
        event = c.decode(record.value)
        assert isinstance(event, c.Envelope)
        published.add(event.payload.incident_id)  # type: ignore[attr-defined]
        if published == opened:
            break
    consumer.close()
    assert published == opened
