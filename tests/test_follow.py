"""`fleetlog analyze --follow`: consume the pipeline's topics, analyze as events land, publish."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fleetlog.analysis.pipeline import analyze_store
from fleetlog.analysis.recommend import component_recommendations
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
        # the component actions were issued as the incidents were found: the same ones a batch
        # pass of the policy issues for the stored incidents (`fleetlog act --follow` takes them)
        issued = {r[0] for r in con.execute(
            "SELECT event_id FROM event_log WHERE type = 'recommendation.issued'").fetchall()}
        assert issued and issued == {e.id for e, _row in component_recommendations(con)}
        assert summary["recommendations"] == len(issued)
    finally:
        con.close()
    opened = {row["incident_id"] for row in stats.incidents}
    assert stored == opened
    assert batch <= opened  # streaming saw at least what one batch pass sees
    consumer = KafkaConsumer(f"{prefix}.analysis", bootstrap_servers=kafka_settings.bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=10_000,
                             group_id=unique_name("g"))
    published, recommended = set(), set()
    for record in consumer:
        event = c.decode(record.value)
        assert isinstance(event, c.Envelope)
        if event.type == "recommendation.issued":
            recommended.add(event.id)
        else:
            published.add(event.payload.incident_id)  # type: ignore[attr-defined]
        if published == opened and recommended == issued:
            break
    consumer.close()
    assert published == opened
    assert recommended == issued


def _scrape(url: str) -> dict[str, float]:
    """/metrics over HTTP -> sample (name and labels, as written) -> value."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


@pytest.mark.slow
@pytest.mark.kafka
def test_metrics_are_served_over_http_while_analyze_follow_runs(
        tmp_path: Path, kafka_settings: Any, unique_name: Any) -> None:
    import socket
    import threading

    prefix = unique_name("metrics")
    simulate(SimConfig(nodes=16, hours=1.0, seed=4, scenario="gpu_hw"),
             f"kafka://{kafka_settings.bootstrap}", topic_prefix=prefix)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/metrics"
    done: list[Any] = []
    runner = threading.Thread(target=lambda: done.append(follow(
        tmp_path / "live.duckdb", kafka_settings, topic_prefix=prefix, every_s=1.0,
        idle_exit_s=10.0, metrics_address=f"127.0.0.1:{port}")))
    runner.start()
    seen: dict[str, float] = {}
    try:
        while runner.is_alive():  # scrape while it runs, until it has opened incidents
            try:
                seen = _scrape(url)
            except OSError:
                seen = {}
            if seen.get("fleetlog_detection_event_lag_seconds_count", 0) >= 1 and any(
                    name.startswith("fleetlog_incidents_open{") for name in seen):
                break
            runner.join(timeout=0.5)
    finally:
        runner.join()
    assert seen, "nothing scraped while analyze --follow ran"
    stats = done[0]
    assert seen["fleetlog_events_landed_total"] > 1000
    assert seen["fleetlog_dead_letters_total"] == 0
    assert any(name.startswith("fleetlog_consumer_lag_records{") for name in seen)
    assert seen["fleetlog_analyses_total"] >= 1
    opened = {name: v for name, v in seen.items()
              if name.startswith("fleetlog_incidents_opened_total{")}
    assert opened and all('category="gpu_hw"' in name for name in opened)
    assert sum(opened.values()) >= 1
    assert seen["fleetlog_detection_event_lag_seconds_count"] >= 1
    assert len(stats.incidents) >= sum(opened.values())
    assert any(name.startswith("fleetlog_incidents_open{") for name in seen)
    assert 0 < seen["fleetlog_fleet_goodput_ettr"] <= 1


def _scrape_of(rack: str, time_us: int) -> c.Envelope:
    return c.make_event(c.gpu_batch([f"{rack}-n1"], [1], [0], {"gpu_temp_c": [60.0]}),
                        time_us=time_us, source="t", key=f"rack:{rack}")


def test_live_analysis_waits_for_the_scrape_sources_still_talking() -> None:
    """The watermark is the newest time every scrape source still landing has reached: a rack
    whose scrapes are on their way holds it back; one quiet for longer than the lateness (-1 s
    here: every source is quiet by the time it is asked) no longer does."""
    from fleetlog.analysis.follow import LiveAnalysis

    t0 = 1_767_571_200_000_000
    patient = LiveAnalysis(lateness_s=3600.0)
    patient.landed([_scrape_of("r1", t0 + 60_000_000), _scrape_of("r2", t0 + 20_000_000),
                    _scrape_of("r2", t0 + 10_000_000)], new=3, dead_letters=0)
    assert patient.newest_us == t0 + 60_000_000
    assert patient.watermark_us() == t0 + 20_000_000  # r2 is behind: wait for it
    patient.landed([_scrape_of("r2", t0 + 70_000_000)], new=1, dead_letters=0)
    assert patient.watermark_us() == t0 + 60_000_000
    impatient = LiveAnalysis(lateness_s=-1.0)
    impatient.landed([_scrape_of("r1", t0 + 60_000_000), _scrape_of("r2", t0 + 20_000_000)],
                     new=2, dead_letters=0)
    assert impatient.watermark_us() == t0 + 60_000_000  # nobody still talking: the newest


def test_live_analysis_waits_for_the_job_stream_too() -> None:
    """Step reports landing behind the scrapes hold the watermark back (read alone up to the
    scrapes, every job would look hung); other job events do not count."""
    from fleetlog.analysis.follow import LiveAnalysis

    t0 = 1_767_571_200_000_000
    live = LiveAnalysis(lateness_s=3600.0)
    step = c.make_event(c.JobStepReported(job="j1", step=10, step_time_s=1.0, tokens_per_s=1e5),
                        time_us=t0 + 30_000_000, source="t")
    live.landed([_scrape_of("r1", t0 + 60_000_000), step], new=2, dead_letters=0)
    assert live.watermark_us() == t0 + 30_000_000
    later = c.make_event(c.JobStepReported(job="j2", step=3, step_time_s=1.0, tokens_per_s=1e5),
                         time_us=t0 + 90_000_000, source="t")
    live.landed([later, _scrape_of("r1", t0 + 95_000_000)], new=2, dead_letters=0)
    assert live.watermark_us() == t0 + 90_000_000


@pytest.mark.slow
def test_wall_lag_is_measured_only_on_a_live_stream(tmp_path: Path) -> None:
    """A simulated January analysed later has no wall-clock latency (it would be the distance
    between two clocks: 334 days in issue #22): the wall lag is None, the event lag stands, and
    the summary says how far the stream's clock is behind. The same cluster simulated up to now
    is live, and its wall lag is measured."""
    from datetime import UTC, datetime, timedelta

    from fleetlog.analysis.follow import LIVE_AHEAD_S, LIVE_BEHIND_S, LiveAnalysis, is_live

    us = 1_000_000
    assert is_live(0, int(LIVE_BEHIND_S) * us) and not is_live(0, int(LIVE_BEHIND_S) * us + 1)
    assert is_live(int(LIVE_AHEAD_S) * us, 0) and not is_live(int(LIVE_AHEAD_S) * us + 1, 0)

    def followed(start: datetime, name: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        db = tmp_path / f"{name}.duckdb"
        config = SimConfig(nodes=8, hours=1.0, seed=4, scenario="gpu_hw", start=start)
        simulate(config, ("duckdb", str(db)))
        rows: list[dict[str, Any]] = []
        live = LiveAnalysis(on_incident=rows.append, recommend=False)
        con = open_store(db)
        try:
            newest = con.execute("SELECT max(epoch_us(ts)) FROM event_log").fetchone()
            assert newest is not None
            live.landed([_scrape_of("r1", int(newest[0]))], new=1, dead_letters=0)
            live.turn(con, last=True)
        finally:
            con.close()
        assert rows, "the simulated faults were found"
        return live.stats.summary(), rows

    summary, rows = followed(datetime(2026, 1, 5, tzinfo=UTC), "january")
    assert all(row["wall_lag_s"] is None and row["event_lag_s"] >= 0 for row in rows)
    assert summary["wall_lag_median_s"] is None and summary["event_lag_median_s"] is not None
    assert summary["stream_behind_wall_s"] > LIVE_BEHIND_S

    now = datetime.now(UTC).replace(microsecond=0)
    summary, rows = followed(now - timedelta(hours=1), "live")
    assert all(row["wall_lag_s"] is not None for row in rows)
    assert all(row["wall_lag_s"] >= row["event_lag_s"] for row in rows)
    assert summary["wall_lag_median_s"] is not None
    assert 0 <= summary["stream_behind_wall_s"] <= LIVE_BEHIND_S
