"""`fleetlog state --at T`: the fleet at a past moment, rebuilt from events."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from fleetlog.cli.main import cli
from fleetlog.ingest import contract as c
from fleetlog.ingest.store.writer import land

T0 = 1_767_571_200_000_000  # 2026-01-05T00:00:00Z
MIN = 60_000_000


def _store(path: Path) -> Path:
    events = [
        c.make_event(c.NodeRegistered(node=f"n{i}", rack="r0", region="eu", vcluster="vc0",
                                      gpu_count=8, gpu_model="H100", nic_count=8),
                     time_us=T0, source="t") for i in range(3)
    ] + [
        c.make_event(c.JobSubmitted(job="j1", gpus=16, vcluster="vc0"), time_us=T0, source="t"),
        c.make_event(c.JobPlaced(job="j1", nodes=["n0", "n1"], vcluster="vc0"), time_us=T0,
                     source="t"),
        c.make_event(c.JobStarted(job="j1"), time_us=T0, source="t"),
        c.make_event(c.XidReported(node="n1", gpu=2, xid=79), time_us=T0 + 10 * MIN, source="t"),
        c.make_event(c.JobFailed(job="j1", step=10, exit_code=1, reason="CUDA"),
                     time_us=T0 + 10 * MIN, source="t"),
        c.make_event(c.NodeWentDown(node="n1", reason="reboot"), time_us=T0 + 11 * MIN,
                     source="t"),
        c.make_event(c.IncidentOpened(incident_id="i1", start_us=T0 + 10 * MIN, category="gpu_hw",
                                      root_entity="gpu:n1/2", confidence=0.9),
                     time_us=T0 + 10 * MIN, source="t"),
        c.make_event(c.JobRestarted(job="j1", from_step=0, nodes=["n0", "n2"]),
                     time_us=T0 + 20 * MIN, source="t"),
        c.make_event(c.NodeCameUp(node="n1"), time_us=T0 + 30 * MIN, source="t"),
    ]
    land(path, events)
    return path


def _state(db: Path, at: str) -> dict:
    result = CliRunner().invoke(cli, ["state", "--db", str(db), "--at", at])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_state_moves_with_time(tmp_path: Path) -> None:
    db = _store(tmp_path / "f.duckdb")
    before = _state(db, "2026-01-05T00:05:00Z")
    assert before["nodes"] == {"total": 3, "up": 3}
    assert before["jobs"] == {"running": 1}
    assert before["open_incidents"] == []
    during = _state(db, "2026-01-05T00:15:00Z")
    assert during["nodes"]["down"] == 1
    assert [n["node"] for n in during["nodes_not_up"]] == ["n1"]
    assert during["jobs"] == {"failed": 1}
    assert [i["incident_id"] for i in during["open_incidents"]] == ["i1"]
    after = _state(db, "2026-01-05T00:40:00Z")
    assert after["nodes"] == {"total": 3, "up": 3}
    assert after["job_list"][0]["restarts"] == 1


def test_the_moment_must_have_a_zone(tmp_path: Path) -> None:
    db = _store(tmp_path / "f.duckdb")
    result = CliRunner().invoke(cli, ["state", "--db", str(db), "--at", "2026-01-05T00:05:00"])
    assert result.exit_code == 2
    assert "has no time zone" in result.output
