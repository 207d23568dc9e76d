"""``fleetlog scrape`` against a real capture served over HTTP, and Kafka as a target."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from kafka import KafkaConsumer
from readers_support import FIXTURES, capture, query, run

from fleetlog.ingest import contract as c
from fleetlog.ingest.kafka.settings import KafkaSettings
from fleetlog.ingest.readers.scrape import parse_interval

T4 = FIXTURES / "dcgm" / "datadog__dcgm-exporter-tesla-t4.metrics"


@pytest.fixture
def exporter() -> Iterator[tuple[str, list[int]]]:
    """A dcgm-exporter stand-in on 127.0.0.1 serving the real T4 scrape; request 2 fails."""
    body = T4.read_bytes()
    hits: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(1)
            if self.path != "/metrics":
                self.send_error(404)
                return
            if len(hits) == 2:
                self.send_error(500, "DCGM hiccup")
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/metrics", hits
    finally:
        server.shutdown()
        server.server_close()


def test_scrape_polls_and_lands_each_scrape(tmp_path: Path,
                                            exporter: tuple[str, list[int]]) -> None:
    url, hits = exporter
    db = tmp_path / "live.duckdb"
    code, out, err = run("scrape", "--dcgm", url, "--interval", "200ms", "--count", "3",
                         "--to", f"duckdb:{db}")
    assert code == 0, err
    assert len(hits) == 3
    assert (out["polls"], out["ok_polls"], out["failed_polls"], out["events"],
            out["gpu_rows"]) == (3, 2, 1, 2, 2)
    assert "500" in out["last_error"]
    rows = query(db, "SELECT node, gpu, sm_clock_mhz, gpu_temp_c FROM gpu_samples ORDER BY ts")
    assert rows == [("424773df46e0", 0, 300.0, 25.0)] * 2
    times = query(db, "SELECT DISTINCT ts FROM gpu_samples")
    assert len(times) == 2  # each poll is its own sample, at its own time


def test_a_scrape_beyond_the_input_limit_is_a_failed_poll(
    tmp_path: Path, exporter: tuple[str, list[int]], monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fleetlog.ingest.readers import inputs

    monkeypatch.setattr(inputs, "MAX_INPUT", 1000)  # the T4 scrape is 5 kB
    url, _ = exporter
    code, out, err = run("scrape", "--dcgm", url, "--count", "1", "--to",
                         f"duckdb:{tmp_path / 'live.duckdb'}")
    assert code == 1, err  # its only poll failed: nothing was collected
    assert (out["polls"], out["ok_polls"], out["failed_polls"], out["events"]) == (1, 0, 1, 0)
    assert out["last_error"] == (f"{url}: the answer is larger than 1,000 bytes, the limit of "
                                 "one input")


def test_scrape_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    code, _, err = run("scrape", "--to", f"duckdb:{tmp_path / 'x.duckdb'}")
    assert (code, err.strip()) == (1, "Error: nothing to scrape: give --dcgm URL and/or "
                                      "--nvidia-smi")
    code, _, err = run("scrape", "--dcgm", "localhost:9400", "--to", "duckdb:x.duckdb")
    assert code == 1 and "http://" in err
    code, _, err = run("scrape", "--dcgm", "http://x/metrics", "--interval", "soon",
                       "--to", "duckdb:x.duckdb")
    assert code == 2 and "'soon' is not a duration (e.g. 500ms, 30s" in err


@pytest.mark.parametrize(("text", "seconds"), [("10s", 10), ("500ms", 0.5), ("1m", 60),
                                               ("2.5", 2.5), ("1h", 3600)])
def test_intervals(text: str, seconds: float) -> None:
    assert parse_interval(text) == seconds


def _consume(settings: KafkaSettings, topic: str, group: str, want: int) -> list[bytes]:
    consumer = KafkaConsumer(topic, **settings.client_kwargs(), auto_offset_reset="earliest",
                             group_id=group, consumer_timeout_ms=10_000)
    try:
        values = []
        for message in consumer:
            values.append(message.value)
            if len(values) >= want:
                break
        return values
    finally:
        consumer.close()


@pytest.mark.kafka
def test_import_publishes_events_and_dead_letters_to_kafka(
    tmp_path: Path, kafka_settings: KafkaSettings, unique_name: Callable[[str], str],
) -> None:
    lines = capture("xid/gpud__dmesg-with-xid-119.log").read_text().splitlines()
    lines.insert(0, "not a kernel record")
    log = tmp_path / "dmesg.log"
    log.write_text("\n".join(lines) + "\n")
    prefix = unique_name("readers")
    code, out, err = run("import", "--to", f"kafka://{kafka_settings.bootstrap}",
                         "--topic-prefix", prefix, "--tz", "UTC", "--node", "gpu-node-1", log)
    assert code == 0, err
    assert (out["published"], out["dead_letters"]) == (5, 1)
    host = [c.decode(v) for v in _consume(kafka_settings, f"{prefix}.host",
                                          unique_name("g"), 5)]
    assert [e.payload.xid for e in host if isinstance(e, c.Envelope)] == [119] * 5
    dlq = [json.loads(v) for v in _consume(kafka_settings, f"{prefix}.dlq", unique_name("g"), 1)]
    assert dlq[0]["origin"] == str(log) and dlq[0]["offset"] == 1
    assert base64.b64decode(dlq[0]["raw_b64"]) == b"not a kernel record"


@pytest.mark.kafka
def test_scrape_publishes_each_poll_to_kafka(
    kafka_settings: KafkaSettings, unique_name: Callable[[str], str],
    exporter: tuple[str, list[int]],
) -> None:
    url, _ = exporter
    prefix = unique_name("scrape")
    code, out, err = run("scrape", "--dcgm", url, "--interval", "100ms", "--count", "1",
                         "--to", f"kafka://{kafka_settings.bootstrap}", "--topic-prefix", prefix)
    assert code == 0, err
    assert out["events"] == 1
    (event,) = [c.decode(v) for v in _consume(kafka_settings, f"{prefix}.gpu",
                                              unique_name("g"), 1)]
    assert isinstance(event, c.Envelope) and event.key == "node:424773df46e0"


def test_scrape_runs_the_local_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in nvidia-smi on PATH prints the H100 capture's values for the scrape's query."""
    import csv
    import io

    from fleetlog.ingest.readers.scrape import NVIDIA_SMI_FIELDS

    rows = list(csv.reader(io.StringIO(capture(
        "nvidia_smi/extracted/h100__query-gpu.load.csv").read_text()), skipinitialspace=True))
    names = [h.split(" [")[0] for h in rows[0]]
    wanted = NVIDIA_SMI_FIELDS.split(",")
    picked = [names.index(f) for f in wanted]
    output = "\n".join(", ".join(row[i] for i in picked) for row in rows) + "\n"
    (tmp_path / "out.csv").write_text(output)
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\ncat '{tmp_path / 'out.csv'}'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:/usr/bin:/bin")
    db = tmp_path / "live.duckdb"
    code, out, err = run("scrape", "--nvidia-smi", "--node", "h100-box", "--count", "1",
                         "--to", f"duckdb:{db}")
    assert code == 0, err
    assert (out["failed_polls"], out["gpu_rows"]) == (0, 1)
    assert query(db, "SELECT node, gpu, util_pct, sm_clock_mhz, gpu_temp_c, fb_used_mib "
                     "FROM gpu_samples") == [("h100-box", 0, 100.0, 1980.0, 59.0, 19818.0)]


def test_scrape_without_nvidia_smi_says_so(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    code, _, err = run("scrape", "--nvidia-smi", "--to", f"duckdb:{tmp_path / 'x.duckdb'}")
    assert code == 1 and err.startswith("Error: nvidia-smi is not on PATH here")
