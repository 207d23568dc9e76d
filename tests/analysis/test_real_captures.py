"""Every real capture in ../shared/data that fleetlog can import, imported as a user would (the
``fleetlog import`` command with the options the file needs), then analyzed and advised on.

An incident is a claim that the infrastructure broke: healthy captures raise none and no action
that takes capacity away; the XID captures land on the right GPU once the node's inventory maps
the PCI address (and on the node, saying why, when nothing does) with NVIDIA's catalog action;
the sacct capture becomes job outcomes by state, never incidents. The captures are not part of a
user's clone: each test skips with the path it looked for.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import duckdb
from click.testing import CliRunner
from readers_support import capture  # the readers' tests' one way to find a real capture

from fleetlog.analysis.evidence import CAPACITY_ACTIONS
from fleetlog.cli.main import cli

# (capture, the options it needs as a user would pass them)
HEALTHY: list[tuple[str, list[str]]] = [
    ("nvidia_smi/telegraf__nvidia-smi-q-x__a100-sxm4-v12.xml", ["--tz", "UTC", "--node", "a100"]),
    ("nvidia_smi/telegraf__nvidia-smi-q-x__tesla-t4.xml", ["--tz", "UTC", "--node", "t4"]),
    ("nvidia_smi/extracted/h100__query-gpu.idle.csv", ["--tz", "UTC", "--node", "h100"]),
    ("nvidia_smi/extracted/h100__query-gpu.load.csv", ["--tz", "UTC", "--node", "h100"]),
    ("nvidia_smi/nvidia_gpu_exporter__h100__load.metrics",
     ["--node", "h100-exporter", "--time", "2026-07-14T08:13:00Z"]),
    ("network/gpud__sys-class-infiniband-h100.0.tar.gz",
     ["--node", "ib-node", "--time", "2025-01-01T00:00:00Z"]),
    ("network/node_exporter__e2e-output__node_infiniband.prom",
     ["--node", "ne-node", "--time", "2025-01-01T00:00:00Z"]),
    ("network/node_exporter__sys.ttar__class_infiniband.ttar",
     ["--node", "ttar-node", "--time", "2025-01-01T00:00:00Z"]),
    ("network/infiniband_exporter/perfquery__0x506b4b03005c2740.out",
     ["--node", "ibsw-1", "--time", "2025-01-01T00:00:00Z"]),
    ("network/infiniband_exporter/perfquery__0x7cfe9003009ce5b0.out",
     ["--node", "ibsw-2", "--time", "2025-01-01T00:00:00Z"]),
    # XID 13 (the application's own graphics exceptions): not a hardware fault.
    ("xid/gpud__memory__dmesg.decode.iso.log", ["--tz", "UTC", "--node", "xid13-node"]),
]
XID_119 = "xid/gpud__dmesg-with-xid-119.log"  # XIDs on PCI 0000:9b:00, "GPU4" in the message
H100_CSV = "nvidia_smi/extracted/h100__query-gpu.idle.csv"
SACCT = "slurm/sample-sacct-output-midnight-edge-case.txt"


def _run(*args: str) -> Any:
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def _import(db: Path, path: Path, options: list[str]) -> dict[str, Any]:
    report: dict[str, Any] = _run("import", "--to", f"duckdb:{db}", *options, str(path))
    assert report["dead_letters"] == 0, report
    return report


def _analyze_and_recommend(db: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    return _run("analyze", "--db", str(db)), _run("recommend", "--db", str(db))


def _inventory_csv(tmp_path: Path, node_gpu_of_bus: dict[str, int]) -> Path:
    """The node's `nvidia-smi --query-gpu` inventory in the real capture's format: the real H100
    row once per GPU, its index, PCI address and UUID replaced (no real capture of the XID
    log's node exists; the PCI map is what this test is about)."""
    with capture(H100_CSV).open(newline="") as handle:
        header, row = list(csv.reader(handle, skipinitialspace=True))[:2]
    names = [h.strip() for h in header]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for bus, index in sorted(node_gpu_of_bus.items(), key=lambda kv: kv[1]):
        cells = list(row)
        cells[names.index("index")] = str(index)
        cells[names.index("pci.bus_id")] = bus
        cells[names.index("uuid")] = f"GPU-00000000-0000-0000-0000-00000000000{index}"
        writer.writerow(cells)
    path = tmp_path / "nvidia-smi-query-gpu.csv"
    path.write_text(out.getvalue())
    return path


# ---- healthy captures ------------------------------------------------------------------------


def test_healthy_captures_raise_no_incident_and_take_no_capacity(tmp_path: Path) -> None:
    """All of them in one store, as a user collecting what they have would: one-off snapshots of
    several nodes at unrelated times are no steady cadence, so nothing "fell off"."""
    db = tmp_path / "healthy.duckdb"
    landed = 0
    for relative, options in HEALTHY:
        landed += _import(db, capture(relative), options)["landed"]
    assert landed > 0
    analysis, actions = _analyze_and_recommend(db)
    assert analysis["incidents"] == 0, analysis["opened"]
    assert not [a for a in actions if a["action"] in CAPACITY_ACTIONS]


def test_one_off_nvidia_smi_snapshots_are_not_host_hardware(tmp_path: Path) -> None:
    """Before: each XML snapshot of a healthy GPU became host_hw at 84 % and drain_node."""
    db = tmp_path / "snapshots.duckdb"
    for relative, options in HEALTHY[:4]:
        _import(db, capture(relative), options)
    analysis, actions = _analyze_and_recommend(db)
    assert analysis["by_category"] == {}
    assert actions == []


def test_nvidia_smi_captures_register_their_gpus_pci_addresses(tmp_path: Path) -> None:
    db = tmp_path / "inventory.duckdb"
    for relative, options in (HEALTHY[0], HEALTHY[1], HEALTHY[2], HEALTHY[4]):
        _import(db, capture(relative), options)
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("SELECT node, gpu, pci_bus_id FROM gpus ORDER BY node").fetchall()
    assert rows == [("a100", 0, "0000:01:00.0"), ("h100", 0, "0000:00:09.0"),
                    ("h100-exporter", 0, "0000:00:09.0"), ("t4", 0, "0000:00:1e.0")]


# ---- XIDs on GPUs ----------------------------------------------------------------------------


def test_xid_119_roots_on_the_gpu_its_pci_address_names(tmp_path: Path) -> None:
    db = tmp_path / "xid.duckdb"
    # nvidia-smi's spelling (8-digit domain, upper case); the kernel line says 0000:9b:00.
    buses = {f"00000000:{bus}:00.0": i
             for i, bus in enumerate(["1B", "43", "52", "61", "9B", "C3", "D1", "DF"])}
    _import(db, _inventory_csv(tmp_path, buses), ["--tz", "UTC", "--node", "gpu-node-1"])
    _import(db, capture(XID_119), ["--tz", "UTC", "--node", "gpu-node-1"])
    analysis, actions = _analyze_and_recommend(db)
    assert analysis["by_category"] == {"gpu_gsp": 1}, analysis["opened"]
    [incident] = analysis["opened"]
    assert incident["root_entity"] == "gpu:gpu-node-1/4"
    component = [a for a in actions if a["incident_id"] == incident["incident_id"]
                 and not a["target"].startswith("job:")]
    assert [(a["action"], a["target"], a["catalog_action"]) for a in component] == [
        ("reset_gpu", "gpu:gpu-node-1/4", "RESET_GPU")]
    stored = _run("sql", "--db", str(db), "SELECT action, target, catalog_action "
                  "FROM recommendations WHERE catalog_action IS NOT NULL")
    assert stored == [{"action": "reset_gpu", "target": "gpu:gpu-node-1/4",
                       "catalog_action": "RESET_GPU"}]


def test_xid_without_a_pci_map_roots_on_the_node_and_says_why(tmp_path: Path) -> None:
    db = tmp_path / "xid-alone.duckdb"
    _import(db, capture(XID_119), ["--tz", "UTC", "--node", "gpu-node-1"])
    analysis, actions = _analyze_and_recommend(db)
    [incident] = analysis["opened"]
    assert incident["root_entity"] == "node:gpu-node-1"
    explained = _run("explain", "--db", str(db), incident["incident_id"])
    assert any("no GPU inventory for node gpu-node-1 maps PCI 0000:9b:00.0" in line
               for line in explained["timeline"]), explained["timeline"]
    assert explained["hardware_evidence"] == "XID 119"
    assert {a["catalog_action"] for a in actions if not a["target"].startswith("job:")} == {
        "RESET_GPU"}


# ---- sacct: job outcomes ---------------------------------------------------------------------


def test_sacct_capture_gives_job_outcomes_and_no_incident(tmp_path: Path) -> None:
    """Before: 262 `software` incidents at 0.954 (a TIMEOUT among them), exit_code -1 and
    lost_s 0.0 where the capture has no such column, 786 recommendations."""
    db = tmp_path / "sacct.duckdb"
    _import(db, capture(SACCT), ["--tz", "UTC"])
    analysis, actions = _analyze_and_recommend(db)
    assert analysis["incidents"] == 0
    assert actions == []
    rows = _run("sql", "--db", str(db), "SELECT state, account, count(*) AS runs, "
                "count(exit_code) AS exit_codes, count(cancelled_by) AS by_whom "
                "FROM job_outcomes GROUP BY ALL ORDER BY runs DESC, state")
    assert rows == [
        {"state": "FAILED", "account": "job", "runs": 259, "exit_codes": 0, "by_whom": 0},
        {"state": "CANCELLED", "account": "job", "runs": 24, "exit_codes": 0, "by_whom": 24},
        {"state": "COMPLETED", "account": "job", "runs": 18, "exit_codes": 0, "by_whom": 0},
        {"state": "OUT_OF_MEMORY", "account": "job", "runs": 2, "exit_codes": 0, "by_whom": 0},
        {"state": "REQUEUED", "account": "job", "runs": 2, "exit_codes": 0, "by_whom": 0},
        {"state": "TIMEOUT", "account": "job", "runs": 1, "exit_codes": 0, "by_whom": 0},
    ]
    nulls = _run("sql", "--db", str(db), "SELECT count(*) AS failed, "
                 "count(payload->>'exit_code') AS exit_code, count(payload->>'lost_s') AS lost_s "
                 "FROM job_events WHERE type = 'job.failed'")
    assert nulls == [{"failed": 262, "exit_code": 0, "lost_s": 0}]


def test_report_counts_job_outcomes_by_cause(tmp_path: Path) -> None:
    db = tmp_path / "sacct-report.duckdb"
    _import(db, capture(SACCT), ["--tz", "UTC"])
    _run("analyze", "--db", str(db))
    out = tmp_path / "report"
    result = CliRunner().invoke(cli, ["report", "--db", str(db), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    [markdown] = out.glob("*.md")
    text = markdown.read_text()
    assert "## Job outcomes by cause" in text
    assert "| OUT_OF_MEMORY | job | 2 |" in text
