"""``fleetlog import`` over every capture in shared/data: what lands, what is refused, and why."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from readers_support import DATA, FIXTURES, capture, query, run

from fleetlog.cli.main import cli
from fleetlog.ingest import contract as c

AT = "2025-03-01T12:00:00Z"

# Every file in shared/data: (path, import options, format auto-detected, rows it implies).
# Rows are checked against the capture itself in the per-format tests; here the whole import.
READABLE = [
    ("nvidia_smi/nvidia_gpu_exporter__h100__load.metrics", ["--node", "h100"], "dcgm",
     {"gpu_samples": 1}),
    ("nvidia_smi/extracted/h100__query-gpu.idle.csv", ["--node", "h100", "--tz", "UTC"],
     "nvidia-smi-csv", {"gpu_samples": 1}),
    ("nvidia_smi/extracted/h100__query-gpu.load.csv", ["--node", "h100", "--tz", "UTC"],
     "nvidia-smi-csv", {"gpu_samples": 1}),
    ("nvidia_smi/telegraf__nvidia-smi-q-x__a100-sxm4-v12.xml", ["--node", "a100", "--tz", "UTC"],
     "nvidia-smi-xml", {"gpu_samples": 1}),
    ("nvidia_smi/telegraf__nvidia-smi-q-x__tesla-t4.xml", ["--node", "t4", "--tz", "UTC"],
     "nvidia-smi-xml", {"gpu_samples": 1}),
    ("xid/gpud__dmesg-with-xid-119.log", ["--node", "n1", "--tz", "UTC"], "kmsg",
     {"xid_events": 5}),
    ("xid/gpud__memory__dmesg.decode.iso.log", ["--node", "n1"], "kmsg", {"xid_events": 17}),
    ("slurm/sample-sacct-output-midnight-edge-case.txt", ["--tz", "UTC"], "sacct",
     {"job_events": 612}),
    ("network/infiniband_exporter/perfquery__0x7cfe9003009ce5b0.out", ["--node", "ib-i1l1s01"],
     "perfquery", {"port_samples": 2}),
    ("network/infiniband_exporter/perfquery__0x506b4b03005c2740.out", ["--node", "ib-i4l1s01"],
     "perfquery", {"port_samples": 1}),
    ("network/infiniband_exporter/perfquery-rcv-error__0x7cfe9003009ce5b0-1.out",
     ["--node", "ib-i1l1s01"], "perfquery", {"port_samples": 0}),
    ("network/gpud__sys-class-infiniband-h100.0.tar.gz", ["--node", "n1"], "sysfs-ib",
     {"port_samples": 9}),
    ("network/gpud__sys-class-infiniband-h100.0.flat.tsv", ["--node", "n1"], "sysfs-ib",
     {"port_samples": 9}),
    ("network/node_exporter__sys.ttar__class_infiniband.ttar", ["--node", "n1"], "sysfs-ib",
     {"port_samples": 3}),
    ("network/node_exporter__e2e-output__node_infiniband.prom", ["--node", "n1"], "dcgm",
     {"port_samples": 3}),
]
# Captures that are not telemetry a reader maps (inventory, configuration, catalogs, other
# nvidia-smi views): auto-detection refuses them with a one-line error instead of guessing.
NOT_READABLE = [
    "dcgm/dcgm-exporter__1.x-compatibility-metrics.csv",  # counter lists (configuration)
    "dcgm/dcgm-exporter__dcp-metrics-included.csv",
    "dcgm/dcgm-exporter__default-counters.csv",
    "faults/infinitehbd/fault_statistics.json",  # a published fault trace, not telemetry
    "faults/infinitehbd/fault_trace.json",
    "network/infiniband_exporter/ibnetdiscover__test.out",  # topology
    "network/infiniband_exporter/ibswinfo__test1.out",  # switch inventory
    "network/node_exporter__ethtool__eth0_statistics.txt",  # Ethernet, not InfiniBand
    "nvidia_smi/extracted/h100__dmon.load.txt",
    "nvidia_smi/extracted/h100__nvidia-smi-q.load.txt",  # -q text (the XML form is read)
    "nvidia_smi/extracted/h100__nvlink-s.txt",
    "nvidia_smi/extracted/h100__query-retired-pages.idle.csv",
    "nvidia_smi/extracted/h100__topo-m.txt",
    "nvidia_smi/nvidia_gpu_exporter__linux-x86_64__nvidia-h100-80gb-hbm3__590.48.01.txt",
    "slurm/acmetrace__cluster_summary.csv",  # per-cluster statistics, no job records
    "slurm/sample-sinfo-output.txt",
    "slurm/sample-squeue-output.txt",
    "xid/NVSentinel__dcgmerrorsmapping.csv",  # catalogs (ingest/catalog holds the XID one)
    "xid/NVSentinel__xiderrorsmapping.csv",
]
VIEWS = ("gpu_samples", "port_samples", "xid_events", "job_events")


def test_every_capture_is_classified() -> None:
    if not DATA.exists():
        pytest.skip(f"shared/data not found at {DATA}")
    files = {str(p.relative_to(DATA)) for p in DATA.rglob("*")
             if p.is_file() and not p.name.startswith(("LICENSE", "README"))}
    listed = {str((DATA / r[0]).resolve().relative_to(DATA)) for r in READABLE}
    assert files == listed | set(NOT_READABLE)


@pytest.mark.parametrize(("relative", "options", "fmt", "rows"), READABLE,
                         ids=[r[0].rsplit("/", 1)[-1] for r in READABLE])
def test_import_lands_the_rows_the_capture_implies_and_reimport_adds_none(
    tmp_path: Path, relative: str, options: list[str], fmt: str, rows: dict[str, int],
) -> None:
    path = capture(relative)
    db = tmp_path / "f.duckdb"
    code, out, err = run("import", "--to", f"duckdb:{db}", "--time", AT, *options, path)
    assert code == 0, err
    assert out["files"][0]["format"] == fmt
    assert out["dead_letters"] == 0
    counts = {view: query(db, f"SELECT count(*) FROM {view}")[0][0] for view in VIEWS}
    assert counts == {view: rows.get(view, 0) for view in VIEWS}
    code, again, err = run("import", "--to", f"duckdb:{db}", "--time", AT, *options, path)
    assert code == 0, err
    assert again["landed"] == 0 and again["duplicates"] == out["landed"]


@pytest.mark.parametrize("relative", NOT_READABLE, ids=[r.rsplit("/", 1)[-1] for r in NOT_READABLE])
def test_auto_detection_refuses_what_it_cannot_map(tmp_path: Path, relative: str) -> None:
    code, _, err = run("import", "--to", f"duckdb:{tmp_path / 'f.duckdb'}", capture(relative))
    assert code == 1
    assert err.strip().splitlines() == [
        f"Error: {capture(relative)} is in none of the formats fleetlog reads: none of dcgm, "
        "nvidia-smi-csv, nvidia-smi-xml, kmsg, sacct, perfquery, sysfs-ib, jsonl recognised it "
        "(a sacct or nvidia-smi CSV without its header line is read with --format and --fields)"]


def test_dead_letters_keep_file_line_and_reason(tmp_path: Path) -> None:
    text = capture("xid/gpud__dmesg-with-xid-119.log").read_text().splitlines()
    text.insert(3, "NVRM: Xid (PCI:0000:9b:00): 79, truncated line without a timestamp")
    log = tmp_path / "mutated.log"
    log.write_text("\n".join(text) + "\n")
    db = tmp_path / "f.duckdb"
    code, out, err = run("import", "--to", f"duckdb:{db}", "--tz", "UTC", "--node", "n1", log)
    assert code == 0, err
    assert (out["landed"], out["dead_letters"]) == (5, 1)
    rows = query(db, 'SELECT origin, "offset", stage, error, raw FROM dead_letters')
    assert rows == [(str(log), 4, "parse",
                     "not a kernel log record (no timestamp prefix: collect with `dmesg "
                     "--time-format iso` or `journalctl -k -o short-iso`)",
                     b"NVRM: Xid (PCI:0000:9b:00): 79, truncated line without a timestamp")]


def test_several_files_in_one_import_and_nothing_lands_when_one_needs_an_option(
    tmp_path: Path,
) -> None:
    db = tmp_path / "f.duckdb"
    sacct_file = capture("slurm/sample-sacct-output-midnight-edge-case.txt")
    xml = capture("nvidia_smi/telegraf__nvidia-smi-q-x__tesla-t4.xml")
    code, _, err = run("import", "--to", f"duckdb:{db}", "--node", "t4", sacct_file, xml)
    assert code == 1 and "--tz" in err
    assert not db.exists()  # read everything first: nothing half-landed
    code, out, err = run("import", "--to", f"duckdb:{db}", "--node", "t4", "--tz", "UTC",
                         sacct_file, xml)
    assert code == 0, err
    assert [f["format"] for f in out["files"]] == ["sacct", "nvidia-smi-xml"]
    assert out["rows"]["gpu_samples_raw"] == 1 and out["rows"]["job_events_raw"] == 612


def test_jsonl_round_trip_keeps_ids(tmp_path: Path) -> None:
    events = [
        c.make_event(c.XidReported(node="n1", xid=79, pci_bus_id="0000:3b:00.0"),
                     time_us=1_700_000_000_000_000, source="test"),
        c.make_event(c.gpu_batch(["n1"], [1], [0], {"gpu_temp_c": [50.0]}),
                     time_us=1_700_000_000_000_000, source="test"),
    ]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(c.encode_json(e) for e in events) + b"\n{broken\n")
    db = tmp_path / "f.duckdb"
    code, out, err = run("import", "--to", f"duckdb:{db}", path)
    assert code == 0, err
    assert out["files"][0]["format"] == "jsonl"
    assert (out["landed"], out["dead_letters"]) == (2, 1)
    ids = {r[0] for r in query(db, "SELECT event_id FROM event_log")}
    assert ids == {e.id for e in events}
    assert query(db, 'SELECT "offset", stage FROM dead_letters') == [(3, "envelope")]


def test_one_line_errors_for_the_user(tmp_path: Path) -> None:
    t4 = FIXTURES / "dcgm" / "datadog__dcgm-exporter-tesla-t4.metrics"
    code, _, err = run("import", t4)
    assert (code, err.strip().splitlines()[-1]) == (
        2, "Error: say where the events go: --to duckdb:PATH or --to kafka://HOST:PORT")
    db = f"duckdb:{tmp_path / 'f.duckdb'}"
    code, _, err = run("import", "--db", tmp_path / "f.duckdb", "--to", "kafka://h:1", t4)
    assert (code, err.strip().splitlines()[-1]) == (
        2, "Error: --db is the old spelling of --to: give one")
    code, _, err = run("import", "--to", db, "--tz", "Mars/Olympus", t4)
    assert code == 1 and "is not a time zone" in err and len(err.strip().splitlines()) == 1
    code, _, err = run("import", "--to", db, "--time", "2025-01-01T00:00", t4)
    assert code == 2 and "no time zone" in err


def _has_command(name: str) -> bool:
    return name in cli.commands


@pytest.mark.skipif(not _has_command("analyze"), reason="`fleetlog analyze` is not built yet")
def test_analyze_runs_on_imported_real_captures(tmp_path: Path) -> None:
    db = tmp_path / "f.duckdb"
    steps: list[Callable[[], tuple[int, object, str]]] = [
        lambda: run("import", "--to", f"duckdb:{db}", "--tz", "UTC", "--node", "gpu-node-1",
                    capture("xid/gpud__dmesg-with-xid-119.log"),
                    capture("nvidia_smi/extracted/h100__query-gpu.load.csv")),
        lambda: run("import", "--to", f"duckdb:{db}", "--node", "gpu-node-1", "--time",
                    "2025-02-23T16:30:00Z",
                    capture("network/gpud__sys-class-infiniband-h100.0.tar.gz")),
    ]
    for step in steps:
        code, _, err = step()
        assert code == 0, err
    code, _, err = run("analyze", "--db", db)
    assert code == 0, err
    incidents = query(db, "SELECT category, root_entity FROM incidents")
    # Five XID 119 (GSP RPC timeout, RESET_GPU) on gpu-node-1's GPU at 0000:9b:00.0.
    assert any(cat == "gpu_gsp" and "gpu-node-1" in root for cat, root in incidents), incidents
