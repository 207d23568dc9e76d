"""The rules that keep fleetlog honest on real telemetry, one at a time on a hand-made cluster:
silence counts only after a steady cadence; a silent node that shows life is a telemetry gap;
the scheduler's end states mean what they say (and what a source does not carry stays NULL);
PCI addresses have one spelling; capacity-taking advice needs hardware evidence."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from fleet_builders import Cluster, analyze_cluster, job

from fleetlog.analysis.detectors.gpu import steady_cadence_us
from fleetlog.analysis.evidence import CAPACITY_ACTIONS
from fleetlog.cli.main import cli
from fleetlog.ingest import contract as c
from fleetlog.ingest.store.writer import land


def _cli(*args: str) -> Any:
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


# ---- presence needs a cadence ----------------------------------------------------------------


def test_cadence_needs_enough_regular_samples() -> None:
    s = 1_000_000
    assert steady_cadence_us(np.array([0, 10, 20, 30, 40]) * s) == 10 * s
    assert steady_cadence_us(np.array([0, 10, 21, 30, 40]) * s) == 10 * s  # scrape jitter
    assert steady_cadence_us(np.array([0, 10, 20, 30]) * s) is None  # too few
    assert steady_cadence_us(np.array([0, 1, 7, 30, 31]) * s) is None  # scattered imports


def test_a_node_that_reported_only_a_few_times_never_falls_off(db_path: Path) -> None:
    cluster = Cluster()
    cluster.hooks.append(lambda s, n, g, v: not (n == "n00003" and s >= 3))
    assert analyze_cluster(cluster, db_path) == []


def test_scattered_samples_then_none_are_not_a_silence(db_path: Path) -> None:
    cluster = Cluster()
    seen = {0, 1, 7, 30, 31}
    cluster.hooks.append(lambda s, n, g, v: not (n == "n00003" and s not in seen))
    assert analyze_cluster(cluster, db_path) == []


def test_a_gpu_missing_from_few_scattered_samples_is_not_absent(db_path: Path) -> None:
    cluster = Cluster()
    cluster.hooks.append(lambda s, n, g, v: not (n == "n00002" and g == 5 and s not in {0, 9}))
    assert analyze_cluster(cluster, db_path) == []


def test_a_steady_node_that_stops_is_still_found(db_path: Path) -> None:
    cluster = Cluster()
    cluster.hooks.append(lambda s, n, g, v: not (n == "n00003" and s >= 70))
    [incident] = analyze_cluster(cluster, db_path)
    assert (incident.category, incident.root) == ("host_hw", "node:n00003")


# ---- telemetry gap ---------------------------------------------------------------------------


def test_silent_node_whose_job_keeps_stepping_is_a_telemetry_gap(db_path: Path) -> None:
    cluster = Cluster()
    cluster.hooks.append(lambda s, n, g, v: not (n == "n00003" and s >= 40))
    job(cluster, "j1", [2, 3])  # holds n00003 and keeps reporting steps to the end
    [incident] = analyze_cluster(cluster, db_path)
    assert (incident.category, incident.root) == ("telemetry_gap", "node:n00003")
    assert "step reports" in incident.findings[0].text
    _cli("analyze", "--db", str(db_path))
    actions = _cli("recommend", "--db", str(db_path))
    assert [(a["action"], a["target"]) for a in actions] == [("check_collector", "node:n00003")]


def test_silent_node_with_kernel_lines_is_a_telemetry_gap(db_path: Path) -> None:
    cluster = Cluster()
    cluster.hooks.append(lambda s, n, g, v: not (n == "n00004" and s >= 40))
    for s in (70, 90):
        cluster.add(c.XidReported(node="n00004", gpu=1, xid=13), cluster.t(s))
    [incident] = analyze_cluster(cluster, db_path)
    assert (incident.category, incident.root) == ("telemetry_gap", "node:n00004")
    _cli("analyze", "--db", str(db_path))
    explained = _cli("explain", "--db", str(db_path), incident.incident_id)
    assert explained["what_to_do"].startswith("Check the collector")
    assert "drain" not in explained["what_to_do"].replace("do not drain", "")


# ---- scheduler records -----------------------------------------------------------------------


@pytest.mark.parametrize(("reason", "state"), [
    ("FAILED", "FAILED"), ("CANCELLED by 1185300516", "CANCELLED"), ("TIMEOUT", "TIMEOUT"),
    ("OUT_OF_MEMORY", "OUT_OF_MEMORY"), ("NODE_FAIL", "NODE_FAIL"), ("BOOT_FAIL", "BOOT_FAIL"),
    ("PREEMPTED", "PREEMPTED"), ("REQUEUED", "REQUEUED"), ("DEADLINE", "DEADLINE"),
    ("COMPLETED+", "COMPLETED"), ("OOM: out of memory while allocating", None),
    ("RuntimeError: boom", None), ("", None),
])
def test_scheduler_state_reads_slurms_words_only(reason: str, state: str | None) -> None:
    assert c.scheduler_state(reason) == state


def test_job_failed_v1_reads_its_minus_one_as_unknown() -> None:
    old = {"id": "e1", "type": "job.failed", "v": 1, "time_us": 1_700_000_000_000_000,
           "source": "slurm", "key": "job:42", "payload": {"job": "42", "step": 0, "exit_code": -1,
                                          "reason": "FAILED"}}
    event = c.decode(json.dumps(old).encode())
    assert isinstance(event, c.Envelope) and isinstance(event.payload, c.JobFailed)
    assert event.payload.exit_code is None and event.payload.lost_s == 0.0
    given = {**old, "payload": {**old["payload"], "exit_code": 2, "lost_s": 30.0}}
    kept = c.decode(json.dumps(given).encode())
    assert isinstance(kept, c.Envelope) and isinstance(kept.payload, c.JobFailed)
    assert (kept.payload.exit_code, kept.payload.lost_s) == (2, 30.0)


def test_missing_exit_code_is_null_in_sql(db_path: Path) -> None:
    land(db_path, [c.make_event(c.JobFailed(job="j9", step=0, reason="FAILED"),
                                time_us=1_700_000_000_000_000, source="slurm")])
    rows = _cli("sql", "--db", str(db_path), "SELECT exit_code, state, account FROM job_outcomes")
    assert rows == [{"exit_code": None, "state": "FAILED", "account": "job"}]


@pytest.mark.parametrize("reason", ["TIMEOUT", "OUT_OF_MEMORY", "PREEMPTED", "DEADLINE"])
def test_a_job_ending_on_its_own_account_opens_no_incident(db_path: Path, reason: str) -> None:
    cluster = Cluster()
    job(cluster, "j1", [0, 1], fail_at=60, reason=reason, exit_code=0)
    assert analyze_cluster(cluster, db_path) == []


def test_a_failed_run_seen_in_its_step_telemetry_stays_software(db_path: Path) -> None:
    cluster = Cluster()
    job(cluster, "j1", [0, 1], fail_at=60, reason="FAILED")
    [incident] = analyze_cluster(cluster, db_path)
    assert (incident.category, incident.root) == ("software", "job:j1")
    _cli("analyze", "--db", str(db_path))
    actions = _cli("recommend", "--db", str(db_path))
    assert {a["action"] for a in actions} <= {"fix_code", "fix_and_restart",
                                              "set_checkpoint_interval"}
    assert "restart_from_checkpoint" not in {a["action"] for a in actions}
    explained = _cli("explain", "--db", str(db_path), incident.incident_id)
    assert "Fix the code" in explained["what_to_do"]


def test_node_fail_alone_is_evidence_but_takes_no_capacity(db_path: Path) -> None:
    cluster = Cluster(scrapes=20)
    names = ["n00002"]
    cluster.add(c.JobSubmitted(job="s1", gpus=8, vcluster="vc0"), cluster.t(0))
    cluster.add(c.JobPlaced(job="s1", nodes=names, vcluster="vc0"), cluster.t(1))
    cluster.add(c.JobFailed(job="s1", step=0, reason="NODE_FAIL"), cluster.t(10))
    [incident] = analyze_cluster(cluster, db_path)
    assert incident.root == "node:n00002"
    assert "node_fail" in {f.kind for f in incident.findings}
    _cli("analyze", "--db", str(db_path))
    actions = _cli("recommend", "--db", str(db_path))
    component = [a for a in actions if not a["target"].startswith("job:")]
    assert [a["action"] for a in component] == ["investigate"]
    assert not {a["action"] for a in actions} & CAPACITY_ACTIONS


# ---- PCI addresses ---------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "00000000:3B:00.0", "0000:3b:00.0", "3b:00.0", "0000:3b:00", "PCI:0000:3b:00", " 3B:00.0 ",
])
def test_pci_bus_id_spellings_are_one(text: str) -> None:
    assert c.normalize_pci_bus_id(text) == "0000:3b:00.0"


@pytest.mark.parametrize("text", [None, "", "[N/A]", "3b", "zz:00.0", "0000:3b:00.9"])
def test_not_a_pci_bus_id(text: str | None) -> None:
    assert c.normalize_pci_bus_id(text) is None


def test_kernel_xid_joins_its_gpus_incident(db_path: Path) -> None:
    """The GPU falls off the bus (absent from its node's samples) and the kernel log names it by
    PCI address only: one incident, on the GPU, with the XID among its evidence."""
    cluster = Cluster()
    for g in range(8):
        cluster.add(c.GpuRegistered(node="n00002", gpu=g, pci_bus_id=f"0000:{0x18 + g:02x}:00.0"),
                    cluster.t(0))
    cluster.hooks.append(lambda s, n, g, v: not (n == "n00002" and g == 3 and s >= 50))
    cluster.add(c.XidReported(node="n00002", pci_bus_id="0000:1b:00", xid=79),
                cluster.t(49) + 3_000_000)
    [incident] = analyze_cluster(cluster, db_path)
    assert (incident.category, incident.root) == ("gpu_hw", "gpu:n00002/3")
    assert {"xid", "gpu_absent"} <= {f.kind for f in incident.findings}


def test_a_timeout_next_to_a_hardware_fault_gets_no_restart_advice(db_path: Path) -> None:
    """The GPU's incident stands on its own evidence; the job that hit its wall-time limit at
    the same time ended on its own account: no restart advice for it."""
    cluster = Cluster()
    cluster.hooks.append(lambda s, n, g, v: not (n == "n00002" and g == 3 and s >= 50))
    cluster.add(c.XidReported(node="n00002", gpu=3, xid=79), cluster.t(49) + 3_000_000)
    job(cluster, "j1", [1], fail_at=52, reason="TIMEOUT", exit_code=0)
    [incident] = analyze_cluster(cluster, db_path)
    assert (incident.category, incident.root) == ("gpu_hw", "gpu:n00002/3")
    assert "job_failed" not in {f.kind for f in incident.findings}
    _cli("analyze", "--db", str(db_path))
    actions = _cli("recommend", "--db", str(db_path))
    assert not [a for a in actions if a["target"] == "job:j1"
                and a["action"] in ("restart_from_checkpoint", "migrate_job")]
    assert ("reboot_node", "node:n00002") in {(a["action"], a["target"]) for a in actions}
