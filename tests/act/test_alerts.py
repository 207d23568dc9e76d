"""Incidents as alerts, against a real Alertmanager (Debian's ``prometheus-alertmanager``,
installed by ``make test``) that this module starts on loopback, with a webhook receiver in the
test that records what Alertmanager delivers."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from fleetlog.act.alerts import (
    ALERTNAME,
    AlertError,
    AlertPusher,
    IncidentAlert,
    build_alerts,
    post_alerts,
)
from fleetlog.analysis.context import US
from fleetlog.analysis.pipeline import analyze_store
from fleetlog.analysis.severity import RESOLVE_AFTER_S, SEVERITIES
from fleetlog.cli.main import cli
from fleetlog.generators.config import SimConfig
from fleetlog.generators.run import simulate
from fleetlog.ingest.store import open_store

BINARY = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
pytestmark = [
    pytest.mark.alertmanager,
    # Under CI (CI=true) a missing Alertmanager fails the run (the fixture), never skips it.
    pytest.mark.skipif(BINARY is None and not os.environ.get("CI"),
                       reason="prometheus-alertmanager is not installed: run `make "
                       "alertmanager` (root) or apt-get install prometheus-alertmanager"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Webhook:
    """Records every notification Alertmanager posts to it."""

    received: list[dict[str, Any]] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def statuses(self, incident_id: str) -> list[str]:
        with self.arrived:
            return [a["status"] for n in self.received for a in n["alerts"]
                    if a["labels"].get("incident_id") == incident_id]

    def wait_for(self, incident_id: str, status: str, limit_s: float = 60.0) -> list[str]:
        """Until a notification of ``incident_id`` in ``status`` arrived (or the limit)."""
        deadline = time.monotonic() + limit_s
        with self.arrived:
            while status not in self.statuses(incident_id) and time.monotonic() < deadline:
                self.arrived.wait(timeout=0.5)
        return self.statuses(incident_id)


@dataclass
class Alertmanager:
    url: str
    webhook: Webhook

    def alerts(self, active: bool = True) -> list[dict[str, Any]]:
        query = f"filter=alertname%3D%22{ALERTNAME}%22&active={str(active).lower()}"
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts?{query}", timeout=10) as r:
            return list(json.loads(r.read()))


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Alertmanager]:
    if BINARY is None:
        pytest.fail("prometheus-alertmanager is not installed: `make alertmanager` (root)")
    folder = tmp_path_factory.mktemp("alertmanager")
    webhook = Webhook()

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with webhook.arrived:
                webhook.received.append(body)
                webhook.arrived.notify_all()
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    config = folder / "alertmanager.yml"
    config.write_text(f"""route:
  receiver: hook
  group_by: [incident_id]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
- name: hook
  webhook_configs:
  - url: http://127.0.0.1:{hook.server_port}/
    send_resolved: true
""")
    port = _free_port()
    log = (folder / "alertmanager.log").open("w")
    process = subprocess.Popen(
        [BINARY, f"--config.file={config}", f"--storage.path={folder / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
         "--log.level=warn"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:  # wait until it answers (a wait, not an assertion on time)
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("Alertmanager did not start: "
                            + (folder / "alertmanager.log").read_text()[-2000:])
            time.sleep(0.2)
        yield Alertmanager(url, webhook)
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
        hook.shutdown()
        hook.server_close()


@pytest.fixture(scope="module")
def faulty_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One simulated hour of 16 nodes with GPU faults: a GPU that falls off the bus and stays
    off (open at the end), and faults long over (resolved)."""
    db = tmp_path_factory.mktemp("run") / "fleet.duckdb"
    simulate(SimConfig(nodes=16, hours=1.0, seed=4, scenario="gpu_hw"), f"duckdb:{db}")
    return db


def _ours(alerts: list[dict[str, Any]], ids: set[str]) -> list[dict[str, Any]]:
    return [a for a in alerts if a["labels"]["incident_id"] in ids]


@pytest.mark.slow
def test_incidents_become_alerts_once_each_and_resolve_when_they_end(
        alertmanager: Alertmanager, faulty_run: Path) -> None:
    runner = CliRunner()
    first = runner.invoke(cli, ["analyze", "--db", str(faulty_run), "--alertmanager",
                                alertmanager.url])
    assert first.exit_code == 0, first.output
    summary = json.loads(first.output)
    assert summary["alerts_sent"] == summary["incidents"] >= 2
    con = open_store(faulty_run, read_only=True)
    try:
        newest = con.execute("SELECT epoch_us(max(ts)) FROM event_log").fetchone()[0]
        result = analyze_store(con)
        alerts = build_alerts(con, result.incidents, as_of_us=newest,
                              interval_us=result.interval_us)
        racks = dict(con.execute("SELECT node, rack FROM nodes").fetchall())
    finally:
        con.close()
    ids = {i.incident_id for i in result.incidents}
    open_ids = {a.labels["incident_id"] for a in alerts if a.end_us is None}
    assert open_ids and open_ids != ids  # some still going on, some over
    active = _ours(alertmanager.alerts(), ids)
    assert sorted(a["labels"]["incident_id"] for a in active) == sorted(open_ids)  # once each
    for alert in active:
        labels = alert["labels"]
        incident = next(i for i in result.incidents if i.incident_id == labels["incident_id"])
        assert labels["alertname"] == ALERTNAME
        assert labels["category"] == incident.category
        assert labels["root"] == incident.root
        assert labels["severity"] in SEVERITIES
        node = incident.root.split(":", 1)[1].split("/", 1)[0]
        assert (labels["node"], labels["rack"]) == (node, racks[node])
        assert alert["annotations"]["summary"].startswith(labels["severity"])
        assert "detected:" in alert["annotations"]["explain"]
        assert alert["annotations"]["actions"]
        assert alert["status"]["state"] == "active"
        assert alert["startsAt"].startswith(
            datetime.fromtimestamp(incident.start_us / US, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S"))

    # the same incidents again: Alertmanager updates the alerts it has, adds none
    again = runner.invoke(cli, ["analyze", "--db", str(faulty_run), "--alertmanager",
                                alertmanager.url])
    assert again.exit_code == 0, again.output
    assert sorted(a["fingerprint"] for a in _ours(alertmanager.alerts(), ids)) == sorted(
        a["fingerprint"] for a in active)
    one = sorted(open_ids)[0]
    assert "firing" in alertmanager.webhook.wait_for(one, "firing")

    # later, with no new symptom: the open incidents have ended and their alerts resolve
    con = open_store(faulty_run, read_only=True)
    try:
        later = build_alerts(con, result.incidents,
                             as_of_us=newest + int((RESOLVE_AFTER_S + 60) * US),
                             interval_us=result.interval_us)
    finally:
        con.close()
    assert all(a.end_us is not None for a in later)
    assert post_alerts(alertmanager.url, later) == len(later)
    assert _ours(alertmanager.alerts(), ids) == []
    assert "resolved" in alertmanager.webhook.wait_for(one, "resolved")


def test_alert_labels_stay_the_same_while_the_incident_goes_on(faulty_run: Path) -> None:
    con = open_store(faulty_run, read_only=True)
    try:
        newest = con.execute("SELECT epoch_us(max(ts)) FROM event_log").fetchone()[0]
        result = analyze_store(con)
        now = build_alerts(con, result.incidents, as_of_us=newest,
                           interval_us=result.interval_us)
        later = build_alerts(con, result.incidents, as_of_us=newest + 3600 * US,
                             interval_us=result.interval_us)
    finally:
        con.close()
    assert [a.labels for a in now] == [a.labels for a in later]
    sent_at = datetime(2026, 6, 1, tzinfo=UTC)
    for alert in now:
        payload = alert.payload(sent_at, ttl_s=300)
        if alert.end_us is None:  # open: active for the TTL ahead of the wall clock
            assert payload["endsAt"] == "2026-06-01T00:05:00.000Z"
        else:  # resolved: its last symptom
            assert payload["endsAt"] == datetime.fromtimestamp(
                alert.end_us / US, tz=UTC).isoformat(timespec="milliseconds").replace(
                "+00:00", "Z")


def test_an_open_alert_never_ends_before_it_starts(alertmanager: Alertmanager) -> None:
    """Event time ahead of the wall clock (a replay at --speed 60, a skewed clock): the alert
    still ends after it starts, and Alertmanager takes it."""
    future = int((time.time() + 3600) * US)
    alert = IncidentAlert({"alertname": ALERTNAME, "incident_id": "inc-future",
                           "severity": "info"}, {"summary": "s"}, future, None)
    payload = alert.payload(datetime.now(tz=UTC), ttl_s=300)
    assert payload["endsAt"] > payload["startsAt"]
    assert post_alerts(alertmanager.url, [alert]) == 1


def test_an_alertmanager_that_cannot_be_reached_is_one_line_and_the_pusher_retries() -> None:
    url = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    alert = IncidentAlert({"alertname": ALERTNAME, "incident_id": "inc-x"}, {}, 0, None)
    with pytest.raises(AlertError) as error:
        post_alerts(url, [alert])
    assert str(error.value).startswith(f"cannot reach Alertmanager at {url}")
    assert "\n" not in str(error.value)
    heard: list[str] = []
    failed = threading.Event()

    def on_error(text: str) -> None:
        heard.append(text)
        if len(heard) >= 2:
            failed.set()

    pusher = AlertPusher(url, on_error=on_error, max_backoff_s=1.0).start()
    pusher.update([alert])
    failed.wait(timeout=30)
    pusher.close(flush_s=1)
    assert len(heard) >= 2 and pusher.sent == 0  # retried, never crashed
    assert all(line.startswith("cannot reach Alertmanager") and "retrying in" in line
               for line in heard)


def test_analyze_to_an_absent_alertmanager_is_a_one_line_error(faulty_run: Path,
                                                                tmp_path: Path) -> None:
    db = tmp_path / "copy.duckdb"
    shutil.copy(faulty_run, db)
    url = f"http://127.0.0.1:{_free_port()}"
    result = CliRunner().invoke(cli, ["analyze", "--db", str(db), "--alertmanager", url])
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert f"cannot reach Alertmanager at {url}" in result.output


@pytest.mark.slow
@pytest.mark.kafka
def test_analyze_follow_keeps_alertmanager_told(alertmanager: Alertmanager, tmp_path: Path,
                                                kafka_settings: Any, unique_name: Any) -> None:
    from fleetlog.follow import follow

    prefix = unique_name("alerts")
    simulate(SimConfig(nodes=16, hours=1.0, seed=4, scenario="gpu_hw"),
             f"kafka://{kafka_settings.bootstrap}", topic_prefix=prefix)
    notices: list[str] = []
    stats = follow(tmp_path / "live.duckdb", kafka_settings, topic_prefix=prefix, every_s=1.0,
                   idle_exit_s=6.0, alertmanager=alertmanager.url, on_notice=notices.append)
    assert notices == []  # Alertmanager answered every time
    emitted = {row["incident_id"] for row in stats.incidents}
    assert emitted
    con = open_store(tmp_path / "live.duckdb", read_only=True)
    try:
        newest = con.execute("SELECT epoch_us(max(ts)) FROM event_log").fetchone()[0]
        ends = dict(con.execute("SELECT incident_id, epoch_us(end_ts) FROM incidents")
                    .fetchall())
    finally:
        con.close()
    active = {a["labels"]["incident_id"] for a in _ours(alertmanager.alerts(), emitted)}
    # every incident open at the end is an active alert (its end may have moved on since it
    # was stored: the follower tracks it); none is there twice
    assert active and active <= emitted
    assert {i for i in emitted if newest - ends[i] < RESOLVE_AFTER_S * US} <= active
    assert len(_ours(alertmanager.alerts(), emitted)) == len(active)
