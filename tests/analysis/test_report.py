"""`fleetlog report`: deterministic files per window, charts that render in a real browser."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from fleetlog.analysis.report import run_every, write_report
from fleetlog.cli.main import cli
from fleetlog.ingest import contract as c
from fleetlog.ingest.store.writer import land

T0 = 1_767_571_200_000_000  # 2026-01-05T00:00:00Z
HOUR = 3_600_000_000
ARTIFACTS = Path(__file__).parents[2] / ".fleetlog" / "test-artifacts"


def _store(path: Path) -> Path:
    events: list[c.Envelope] = []
    for i in range(4):
        events.append(c.make_event(
            c.NodeRegistered(node=f"n{i}", rack=f"r{i // 2}", region="eu", vcluster="vc0",
                             gpu_count=8, gpu_model="H100", nic_count=8), time_us=T0, source="t"))
    events += [
        c.make_event(c.JobSubmitted(job="j1", gpus=32, vcluster="vc0"), time_us=T0, source="t"),
        c.make_event(c.JobStarted(job="j1"), time_us=T0, source="t"),
        c.make_event(c.JobCheckpointCompleted(job="j1", step=100, duration_s=60, size_gb=500),
                     time_us=T0 + HOUR, source="t"),
        c.make_event(c.XidReported(node="n1", gpu=3, xid=79), time_us=T0 + 2 * HOUR, source="t"),
        c.make_event(c.JobFailed(job="j1", step=150, exit_code=1, reason="CUDA error",
                                 lost_s=1800), time_us=T0 + 2 * HOUR, source="t"),
        c.make_event(c.JobRestarted(job="j1", from_step=100, nodes=["n0", "n2", "n3"],
                                    overhead_s=600), time_us=T0 + 2 * HOUR + 600_000_000,
                     source="t"),
        c.make_event(c.IncidentOpened(incident_id="inc-1", start_us=T0 + 2 * HOUR,
                                      category="gpu_hw", root_entity="gpu:n1/3", confidence=0.95,
                                      candidates=[c.Candidate(category="gpu_hw",
                                                              entity="gpu:n1/3", score=0.95)]),
                     time_us=T0 + 2 * HOUR, source="t"),
        c.make_event(c.RecommendationIssued(incident_id="inc-1", target="node:n1",
                                            action="reboot_node", reason="XID 79"),
                     time_us=T0 + 2 * HOUR, source="t"),
        c.make_event(c.JobStepReported(job="j1", step=400, step_time_s=2, tokens_per_s=1e6),
                     time_us=T0 + 6 * HOUR, source="t"),
    ]
    land(path, events)
    return path


def test_report_files_and_contents(tmp_path: Path) -> None:
    db = _store(tmp_path / "fleet.duckdb")
    result = CliRunner().invoke(cli, ["report", "--db", str(db), "--out", str(tmp_path / "out"),
                                      "--window", "6h"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["incidents"] == 1
    names = sorted(Path(f).name for f in summary["files"])
    assert names == ["report-20260105T000000Z_20260105T060000Z.html",
                     "report-20260105T000000Z_20260105T060000Z.json",
                     "report-20260105T000000Z_20260105T060000Z.md"]
    data = json.loads((tmp_path / "out" / names[1]).read_text())
    assert data["fleet"]["nodes"] == 4
    assert data["fleet"]["gpus"] == 32
    assert data["fleet"]["fatal_xids"] == 1
    [job] = data["jobs"]
    # 6 h of wall time, 30 min lost work + 10 min restart + 1 min checkpoint.
    assert job["ettr"] == pytest.approx((6 * 3600 - 1800 - 600 - 60) / (6 * 3600), abs=1e-4)
    assert job["lost_gpu_hours"] == pytest.approx((1800 + 600) * 32 / 3600, abs=0.01)
    [incident] = data["incidents"]
    assert incident["component_action"] == "reboot_node node:n1"
    assert incident["job_actions"] == ""
    # no job held n1 (j1 was never placed there) and no job.failed is in the evidence
    assert incident["jobs_touched"] == 0 and incident["gpus"] == 1
    assert incident["severity"] == "info"
    assert incident["state"] == "resolved"  # the XID was 4 h before the window's end
    assert data["actions_taken"] == []
    html = (tmp_path / "out" / names[0]).read_text()
    assert (tmp_path / "out" / "latest.html").read_text() == html
    assert html.count("<svg") == 2
    # Self-contained: nothing to fetch (namespace URIs inside the SVG are not fetched).
    assert 'src="http' not in html and "<link" not in html and "@import" not in html


def _triage_store(path: Path) -> Path:
    """j1 (32 GPUs) on n0..n3, j2 (16 GPUs) on n2, n3: a GPU fault failed j1 at 1 h (long
    resolved at 6 h), a rack's power failed both at 5 h 50 (still open), and an XID on an idle
    spare at 3 h; fleetlog act drained n3 and skipped n2."""
    nodes = [c.make_event(c.NodeRegistered(node=f"n{i}", rack=f"r{i // 2}", region="eu",
                                           vcluster="vc0", gpu_count=8, gpu_model="H100",
                                           nic_count=8), time_us=T0, source="t")
             for i in range(5)]
    fail1 = c.make_event(c.JobFailed(job="j1", step=10, exit_code=1, reason="xid"),
                         time_us=T0 + HOUR, source="t")
    fail2 = c.make_event(c.JobFailed(job="j1", step=20, exit_code=1, reason="down"),
                         time_us=T0 + 5 * HOUR + 50 * 60_000_000, source="t")
    fail3 = c.make_event(c.JobFailed(job="j2", step=20, exit_code=1, reason="down"),
                         time_us=T0 + 5 * HOUR + 50 * 60_000_000, source="t")

    def incident(name: str, category: str, root: str, start: int, end: int,
                 evidence: list[str]) -> c.Envelope:
        return c.make_event(c.IncidentOpened(
            incident_id=name, start_us=start, end_us=end, category=category, root_entity=root,
            confidence=0.9, evidence=evidence), time_us=start, source="t", id=name)

    events = [
        *nodes,
        c.make_event(c.JobSubmitted(job="j1", gpus=32, vcluster="vc0"), time_us=T0, source="t"),
        c.make_event(c.JobPlaced(job="j1", nodes=["n0", "n1", "n2", "n3"], vcluster="vc0"),
                     time_us=T0, source="t"),
        c.make_event(c.JobSubmitted(job="j2", gpus=16, vcluster="vc0"), time_us=T0, source="t"),
        c.make_event(c.JobPlaced(job="j2", nodes=["n2", "n3"], vcluster="vc0"),
                     time_us=T0, source="t"),
        fail1,
        c.make_event(c.JobRestarted(job="j1", from_step=0, nodes=["n0", "n1", "n2", "n3"]),
                     time_us=T0 + 2 * HOUR, source="t"),
        fail2, fail3,
        incident("inc-gpu", "gpu_hw", "gpu:n1/3", T0 + HOUR, T0 + HOUR, [fail1.id]),
        incident("inc-idle", "gpu_hw", "gpu:n4/0", T0 + 3 * HOUR, T0 + 3 * HOUR, []),
        incident("inc-rack", "rack_power", "rack:r1", T0 + 5 * HOUR + 50 * 60_000_000,
                 T0 + 6 * HOUR, [fail2.id, fail3.id]),
        *[c.make_event(c.RecommendationIssued(incident_id="inc-rack", target=target,
                                              action=action, reason="r"),
                       time_us=T0 + 6 * HOUR, source="t")
          for target, action in [("rack:r1", "escalate_rack"),
                                 ("job:j1", "restart_from_checkpoint"),
                                 ("job:j2", "restart_from_checkpoint"),
                                 ("job:j2", "set_checkpoint_interval")]],
    ]
    land(path, events)
    con = duckdb.connect(str(path))
    try:  # fleetlog act's events, as its store would hold them (the report reads them by SQL)
        for n, (kind, payload) in enumerate([
                ("action.executed", {"action": "drain_node", "target": "node:n3",
                                     "incident_id": "inc-rack", "command": "scontrol ..."}),
                ("action.skipped", {"action": "drain_node", "target": "node:n2",
                                    "incident_id": "inc-rack", "why": "budget"})]):
            con.execute("INSERT INTO event_log VALUES (?, ?, 1, ?, 'fleetlog-act', ?, 0, ?, "
                        "now())", [f"act-{n}", kind, datetime.fromtimestamp(
                            (T0 + 6 * HOUR - n) / 1e6, tz=UTC), payload["target"],
                            json.dumps(payload)])
    finally:
        con.close()
    return path


def test_report_is_for_triage_open_first_then_by_severity(tmp_path: Path) -> None:
    db = _triage_store(tmp_path / "fleet.duckdb")
    summary = write_report([db], tmp_path / "out", window_s=6 * 3600, formats=("json", "html"))
    data = json.loads(Path(summary["files"][1]).read_text())
    rows = data["incidents"]
    assert [(r["incident_id"], r["state"], r["severity"]) for r in rows] == [
        ("inc-rack", "open", "critical"),  # two jobs failed, 48 GPUs: still going on
        ("inc-gpu", "resolved", "warning"),  # one job failed, 32 GPUs
        ("inc-idle", "resolved", "info"),  # an idle node's GPU: nothing affected
    ]
    rack = rows[0]
    assert rack["component_action"] == "escalate_rack rack:r1"
    assert rack["job_actions"] == ("3 job actions: restart_from_checkpoint x2, "
                                   "set_checkpoint_interval x1")
    assert (rack["jobs_failed"], rack["jobs_touched"], rack["gpus"]) == (2, 2, 48)
    assert [(a["outcome"], a["target"], a["detail"]) for a in data["actions_taken"]] == [
        ("executed", "node:n3", "scontrol ..."), ("skipped", "node:n2", "budget")]
    page = (tmp_path / "out" / "latest.html").read_text()
    assert page == Path(summary["files"][0]).read_text()
    assert page.index("inc-rack") < page.index("inc-gpu") < page.index("inc-idle")
    assert "Actions taken" in page and "node:n3" in page


def test_same_window_rewrites_the_same_report(tmp_path: Path) -> None:
    db = _store(tmp_path / "fleet.duckdb")
    first = write_report([db], tmp_path / "out", window_s=6 * 3600)
    contents = {f: Path(f).read_bytes() for f in first["files"]}
    second = write_report([db], tmp_path / "out", window_s=6 * 3600)
    assert second["files"] == first["files"]
    assert {f: Path(f).read_bytes() for f in second["files"]} == contents


def test_empty_store_is_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "empty.duckdb"
    CliRunner().invoke(cli, ["init", "--db", str(db)])
    result = CliRunner().invoke(cli, ["report", "--db", str(db), "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert "holds no events yet" in result.output


def test_schedule_stops_cleanly() -> None:
    stop = threading.Event()
    made: list[dict] = []

    def make() -> dict:
        if len(made) == 2:
            stop.set()
        return {"n": len(made)}

    assert run_every(0.01, make, made.append, stop=stop) == 3


def test_every_stops_on_sigterm(tmp_path: Path) -> None:
    db = _store(tmp_path / "fleet.duckdb")
    process = subprocess.Popen(
        [sys.executable, "-m", "fleetlog", "report", "--db", str(db), "--out",
         str(tmp_path / "out"), "--every", "1h"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=Path(__file__).parents[2],
    )
    assert process.stdout is not None
    first = process.stdout.readline()  # the first report is written at once
    assert json.loads(first)["incidents"] == 1
    process.send_signal(signal.SIGTERM)
    _out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "Traceback" not in err


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.browser
def test_html_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: `make test` installs Debian's chromium")
        pytest.skip("chromium not installed (make test installs it)")
    db = _store(tmp_path / "fleet.duckdb")
    [html] = write_report([db], tmp_path / "out", window_s=6 * 3600, formats=["html"])["files"]
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0"]
    dom = subprocess.run([browser, *flags, "--virtual-time-budget=3000", "--dump-dom",
                          f"file://{html}"], capture_output=True, text=True, timeout=120)
    assert 'data-charts="rendered"' in dom.stdout, dom.stderr[-2000:]
    console_errors = [line for line in dom.stderr.splitlines()
                      if "CONSOLE" in line and ("Error" in line or "Uncaught" in line)]
    assert console_errors == []
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    subprocess.run([browser, *flags, "--window-size=1200,1600", f"--screenshot={shot}",
                    f"file://{html}"], capture_output=True, text=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 10_000
    time.sleep(0)  # the screenshot stays for people to look at: .fleetlog/test-artifacts/


# -- hostile input (issue #21) --------------------------------------------------------------------

def test_a_symlink_at_a_report_name_is_refused_and_nothing_is_written_through_it(
        tmp_path: Path) -> None:
    """The report names are predictable: a link planted at one must not redirect the write."""
    db = _store(tmp_path / "fleet.duckdb")
    out = tmp_path / "reports"
    first = write_report([db], out, window_s=86_400, formats=["json"])
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    target = Path(first["files"][0])
    target.unlink()
    target.symlink_to(victim)
    result = CliRunner().invoke(cli, ["report", "--db", str(db), "--out", str(out),
                                      "--window", "24h", "--format", "json"])
    assert result.exit_code == 1, result.output
    assert result.output.count("\n") == 1 and "is a symbolic link" in result.output
    assert "Traceback" not in result.output
    assert victim.read_text() == "precious"
    assert target.is_symlink()


def test_report_files_are_replaced_atomically(tmp_path: Path, monkeypatch) -> None:
    """Each file goes to a temporary file in the folder and is renamed over the name: a crash
    mid-write leaves the previous report whole and no temporary file behind."""
    import fleetlog.analysis.report as report

    db = _store(tmp_path / "fleet.duckdb")
    out = tmp_path / "reports"
    first = write_report([db], out, window_s=86_400, formats=["json"])
    path = Path(first["files"][0])
    before = path.read_text()
    inode = path.stat().st_ino

    def broken(data: dict, *args: object, **kwargs: object) -> str:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report.json, "dumps", broken)
    with pytest.raises(OSError):
        write_report([db], out, window_s=86_400, formats=["json"])
    monkeypatch.undo()
    assert path.read_text() == before
    assert sorted(p.name for p in out.iterdir()) == [path.name]
    write_report([db], out, window_s=86_400, formats=["json"])
    assert path.stat().st_ino != inode, "written in place instead of renamed into place"
    assert sorted(p.name for p in out.iterdir()) == [path.name]
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@pytest.mark.parametrize(("args", "needle"), [
    (["--window", "100000000h"], "longer than the valid time range"),
    (["--window", "nan"], "not a finite duration"),
    (["--window", "inf"], "not a finite duration"),
    (["--window", "-1h"], "must be positive"),
    (["--until", "0001-01-01T00:00:00Z"], "outside the valid time range"),
    (["--every", "1e400s"], "not a finite duration"),
], ids=lambda v: v if isinstance(v, str) else " ".join(v))
def test_bad_report_values_are_one_line_usage_errors(tmp_path: Path, args: list[str],
                                                      needle: str) -> None:
    db = _store(tmp_path / "fleet.duckdb")
    result = CliRunner().invoke(cli, ["report", "--db", str(db), "--out", str(tmp_path / "r"),
                                      *args])
    assert result.exit_code == 2, result.output
    assert needle in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_out_naming_a_file_is_a_usage_error(tmp_path: Path) -> None:
    db = _store(tmp_path / "fleet.duckdb")
    a_file = tmp_path / "passwd"
    a_file.write_text("root:x:0:0")
    result = CliRunner().invoke(cli, ["report", "--db", str(db), "--out", str(a_file)])
    assert result.exit_code == 2, result.output
    assert "is a file" in result.output and "Traceback" not in result.output
    assert a_file.read_text() == "root:x:0:0"


def test_the_library_refuses_a_window_it_cannot_compute(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from fleetlog.analysis.report_data import ReportError

    db = _store(tmp_path / "fleet.duckdb")
    with pytest.raises(ReportError, match="not in"):
        write_report([db], tmp_path / "r", window_s=3.6e11)
    with pytest.raises(ReportError, match="before year 1"):
        write_report([db], tmp_path / "r", window_s=86_400,
                     until=datetime(1, 1, 1, 12, tzinfo=UTC))
    with pytest.raises(ReportError, match="is a file"):
        write_report([db], db, window_s=86_400)
