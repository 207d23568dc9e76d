"""Kernel logs with NVIDIA XID lines: every record format, every XID variant, the catalog join."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from readers_support import capture, query, run

from fleetlog.ingest import contract as c
from fleetlog.ingest.readers import kmsg
from fleetlog.ingest.readers.base import ReadOptions, parse_tz
from fleetlog.ingest.readers.errors import MissingOption
from fleetlog.ingest.store import load_xid_catalog

DMESG_T = "xid/gpud__dmesg-with-xid-119.log"
DMESG_ISO = "xid/gpud__memory__dmesg.decode.iso.log"
# The first XID line of the gpud capture, without its dmesg -T prefix.
XID119 = ("NVRM: Xid (PCI:0000:9b:00): 119, pid=2024380, name=nvidia-smi, Timeout after 6s of "
          "waiting for RPC response from GPU4 GSP! Expected function 103 (GSP_RM_ALLOC) "
          "(0x2081 0x4).")
CATALOG = {xid: (name, action, fatal) for xid, name, action, fatal in load_xid_catalog()}
BOOT = datetime(2025, 2, 23, 16, 0, tzinfo=UTC)
WHEN = datetime(2025, 2, 23, 16, 24, 18, tzinfo=UTC)


def _xids(data: str | bytes, **opts: object) -> kmsg.ReadResult:
    raw = data.encode() if isinstance(data, str) else data
    return kmsg.parse(raw, origin="log", opts=ReadOptions(**opts))  # type: ignore[arg-type]


def _one(result: kmsg.ReadResult) -> tuple[c.Envelope, c.XidReported]:
    assert not result.dead, result.dead
    assert len(result.events) == 1, result.summary()
    payload = result.events[0].payload
    assert isinstance(payload, c.XidReported)
    return result.events[0], payload


def test_dmesg_T_capture_lands_five_gsp_timeouts_with_catalog_action(tmp_path: Path) -> None:
    db = tmp_path / "f.duckdb"
    code, out, err = run("import", "--to", f"duckdb:{db}", "--tz", "UTC", "--node", "gpu-node-1",
                         capture(DMESG_T))
    assert code == 0, err
    assert out["files"][0]["format"] == "kmsg" and out["dead_letters"] == 0
    assert out["files"][0]["skipped"] == {"kernel lines without an XID": 38}
    rows = query(db, "SELECT ts, node, gpu, pci_bus_id, xid, name, action, fatal, pid "
                     "FROM xid_events ORDER BY ts")
    assert [r[0].strftime("%H:%M:%S") for r in rows] == [
        "16:24:18", "16:24:24", "16:24:30", "16:27:12", "16:30:13"]
    assert {r[1:4] for r in rows} == {("gpu-node-1", None, "0000:9b:00.0")}
    assert {r[4:8] for r in rows} == {(119, "GSP_RPC_TIMEOUT", "RESET_GPU", True)}
    assert [r[8] for r in rows] == [2024380, 2024380, 2024380, 1263500, 1240590]
    assert (119, *CATALOG[119]) == (119, "GSP_RPC_TIMEOUT", "RESET_GPU", True)


def test_dmesg_iso_decode_capture_lands_every_xid_with_its_action(tmp_path: Path) -> None:
    db = tmp_path / "f.duckdb"
    code, _, err = run("import", "--to", f"duckdb:{db}", "--node", "gpu-node-2", capture(DMESG_ISO))
    assert code == 0, err  # ISO stamps carry their zone: no --tz needed
    rows = query(db, "SELECT xid, action, fatal, count(*), min(ts), max(ts) FROM xid_events "
                     "GROUP BY ALL ORDER BY xid")
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        (13, CATALOG[13][1], CATALOG[13][2], 16), (43, CATALOG[43][1], CATALOG[43][2], 1)]
    assert (CATALOG[13][1], CATALOG[43][1]) == ("RESTART_APP", "IGNORE")
    assert rows[0][4] == datetime(2025, 1, 21, 4, 41, 44, 283302, tzinfo=UTC)
    pids = query(db, "SELECT pid FROM xid_events WHERE xid = 43")
    assert pids == [(2924364,)]  # pid='<unknown>' on the XID 13 lines stays NULL
    assert query(db, "SELECT count(*) FROM xid_events WHERE xid = 13 AND pid IS NULL") == [(16,)]


@pytest.mark.parametrize(("line", "opts", "time", "host"), [
    (f"[ 1458.000000] {XID119}", {"boot_time": BOOT}, WHEN, None),
    (f"[Sun Feb 23 16:24:18 2025] {XID119}", {"tz": UTC}, WHEN, None),
    (f"[Sun Feb 23 11:24:18 2025] {XID119}", {"tz": parse_tz("America/New_York")}, WHEN, None),
    (f"2025-02-23T16:24:18,000000+00:00 {XID119}", {}, WHEN, None),
    (f"kern  :warn  : 2025-02-23T17:24:18,000000+01:00 {XID119}", {}, WHEN, None),
    (f"kern  :err   : [ 1458.000000] {XID119}", {"boot_time": BOOT}, WHEN, None),
    (f"2025-02-23T16:24:18+0000 gpu-node-3 kernel: {XID119}", {}, WHEN, "gpu-node-3"),
    (f"2025-02-23T16:24:18.000000+00:00 gpu-node-3 kernel: {XID119}", {}, WHEN, "gpu-node-3"),
    (f"Feb 23 16:24:18 gpu-node-3 kernel: {XID119}", {"tz": UTC, "year": 2025}, WHEN,
     "gpu-node-3"),
    (f"[ 1458.000000] gpu-node-3 kernel: {XID119}", {"boot_time": BOOT}, WHEN, "gpu-node-3"),
    (f"4,1234,1458000000,-;{XID119}\n SUBSYSTEM=pci\n DEVICE=+pci:0000:9b:00.0",
     {"boot_time": BOOT}, WHEN, None),
    (json.dumps({"MESSAGE": XID119, "__REALTIME_TIMESTAMP": str(c.to_us(WHEN)),
                 "_HOSTNAME": "gpu-node-3", "SYSLOG_IDENTIFIER": "kernel"}), {}, WHEN,
     "gpu-node-3"),
], ids=["dmesg", "dmesg-T", "dmesg-T-new-york", "dmesg-iso", "dmesg-x-iso", "dmesg-x",
        "journal-short-iso", "journal-short-iso-precise", "syslog", "journal-monotonic",
        "dev-kmsg", "journal-json"])
def test_every_record_format(line: str, opts: dict[str, object], time: datetime,
                             host: str | None) -> None:
    node = {} if host else {"node": "gpu-node-1"}
    event, xid = _one(_xids(line + "\n", **opts, **node))
    assert event.time == time
    assert (xid.xid, xid.pci_bus_id, xid.pid, xid.node) == (
        119, "0000:9b:00.0", 2024380, host or "gpu-node-1")
    assert xid.message.endswith("(0x2081 0x4).")


@pytest.mark.parametrize(("message", "xid", "pci", "pid"), [
    ("NVRM: Xid (0000:01:00): 79, GPU has fallen off the bus.", 79, "0000:01:00.0", None),
    ("NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, GPU has fallen off the bus.", 79,
     "0000:3b:00.0", 1234),
    ("NVRM: Xid (PCI:0000:b7:00 GPU-I:01): 43, pid=77, name=python, Ch 00000008", 43,
     "0000:b7:00.0", 77),
    ("NVRM: Xid (PCI:0000:3b:00): 48, An uncorrectable double bit error (DBE) has been "
     "detected on GPU in the framebuffer at partition 0, subpartition 1.", 48, "0000:3b:00.0",
     None),
    ("NVRM: Xid (PCI:0000:a3:00): 94, pid='<unknown>', name=<unknown>, Contained: SM (0x1). "
     "RST: No, D-RST: No", 94, "0000:a3:00.0", None),
    ("NVRM: Xid (PCI:00000000:1a:00.0): 31, pid=9, name=x, Ch 00000010, intr 10000000. MMU "
     "Fault: ENGINE GRAPHICS GPCCLIENT_T1_0 faulted @ 0x7f_12345000", 31, "0000:1a:00.0", 9),
    ("NVRM: Xid (PCI:0000:9b:00): 79,GPU has fallen off the bus.", 79, "0000:9b:00.0", None),
])
def test_xid_line_variants(message: str, xid: int, pci: str, pid: int | None) -> None:
    _, payload = _one(_xids(f"2025-02-23T16:24:18+00:00 {message}\n", node="n"))
    assert (payload.xid, payload.pci_bus_id, payload.pid) == (xid, pci, pid)


def test_nvswitch_sxid_is_not_a_gpu_xid() -> None:
    text = ("2025-02-23T16:24:18+00:00 nvidia-nvswitch0: SXid (PCI:0000:05:00.0): 12028, "
            "Non-fatal, Link 22 egress non-posted PRIV error\n")
    result = _xids(text, node="n")
    assert not result.events and not result.dead
    assert result.skipped == {"kernel lines without an XID": 1}


def test_multi_line_messages_join_their_record() -> None:
    text = (
        f"[Sun Feb 23 16:24:18 2025] {XID119}\n"
        "                           continued: GPU4 needs a reset\n"
        "[Sun Feb 23 16:24:19 2025] next record\n"
        "4,99,1458000000,-;NVRM: Xid (PCI:0000:9b:00): 79, GPU has fallen\\x0aoff the bus.\n"
        " SUBSYSTEM=pci\n"
    )
    result = _xids(text, node="n", tz=UTC, boot_time=BOOT)
    assert [e.payload.message for e in result.events] == [  # type: ignore[attr-defined]
        XID119.split(": 119, ", 1)[1] + "\ncontinued: GPU4 needs a reset",
        "GPU has fallen\noff the bus.",
    ]


def test_options_the_data_does_not_carry_are_asked_for() -> None:
    with pytest.raises(MissingOption, match="--tz"):
        _xids(f"[Sun Feb 23 16:24:18 2025] {XID119}\n", node="n")
    with pytest.raises(MissingOption, match="--boot-time"):
        _xids(f"[ 1458.000000] {XID119}\n", node="n")
    with pytest.raises(MissingOption, match="--node"):
        _xids(f"2025-02-23T16:24:18+00:00 {XID119}\n")
    with pytest.raises(MissingOption, match="--year"):
        _xids(f"Feb 23 16:24:18 h kernel: {XID119}\n", tz=UTC)


def test_a_log_without_xids_needs_no_options() -> None:
    result = _xids("[Sun Feb 23 16:24:18 2025] clocksource: Long readout interval\n"
                   "[ 12.5] usb 1-1: new device\n")
    assert not result.events and not result.dead


def test_unreadable_lines_are_dead_letters_with_line_numbers() -> None:
    text = (
        f"2025-02-23T16:24:18+00:00 {XID119}\n"
        "this line has no timestamp prefix\n"
        "2025-02-23T16:24:19+00:00 NVRM: Xid (PCI:0000:9b:00): oops\n"
        f"[Sun Feb 31 16:24:18 2025] {XID119}\n"
        f"[Sun Mar  9 02:30:00 2025] {XID119}\n"
    )
    result = _xids(text.encode() + b"\xff\xfe bad bytes\n", node="n",
                   tz=parse_tz("America/New_York"))
    assert len(result.events) == 1
    reasons = {d.offset: d.error for d in result.dead}
    assert sorted(reasons) == [2, 3, 4, 5, 6]
    assert "no timestamp prefix" in reasons[2]
    assert "not understood" in reasons[3]
    assert "unreadable time" in reasons[4]
    assert "does not exist in the --tz zone" in reasons[5]  # 02:30 on 2025-03-09, New York
    assert "UTF-8" in reasons[6]
    assert all(d.stage == "parse" and d.origin == "log" for d in result.dead)


def test_repeated_identical_lines_are_two_facts_and_reimport_is_idempotent(
    tmp_path: Path,
) -> None:
    log = tmp_path / "dmesg.log"
    log.write_text(f"[Sun Feb 23 16:24:18 2025] {XID119}\n" * 2)
    db = tmp_path / "f.duckdb"
    code, first, err = run("import", "--to", f"duckdb:{db}", "--tz", "UTC", "--node", "n", log)
    assert code == 0, err
    assert first["landed"] == 2
    code, second, _ = run("import", "--to", f"duckdb:{db}", "--tz", "UTC", "--node", "n", log)
    assert (second["landed"], second["duplicates"]) == (0, 2)
    assert query(db, "SELECT count(*) FROM xid_events") == [(2,)]


def test_boot_time_offsets_are_added() -> None:
    event, _ = _one(_xids(f"[   60.500000] {XID119}\n", node="n", boot_time=BOOT))
    assert event.time == BOOT + timedelta(seconds=60.5)


def test_unreadable_journal_json_entries_are_dead_letters() -> None:
    ok = json.dumps({"MESSAGE": XID119, "__REALTIME_TIMESTAMP": str(c.to_us(WHEN))})
    text = "\n".join([ok, "{not json", json.dumps({"__REALTIME_TIMESTAMP": "1"}), "[1, 2]",
                      json.dumps({"MESSAGE": XID119, "__REALTIME_TIMESTAMP": "soon"})])
    result = _xids(text + "\n", node="n")
    assert len(result.events) == 1
    assert [(d.offset, d.error.split(":")[0]) for d in result.dead] == [
        (2, "not a journal JSON entry"), (3, "journal entry has no MESSAGE text"),
        (4, "not a kernel log record (no timestamp prefix"),
        (5, "XID line with an unreadable time")]
