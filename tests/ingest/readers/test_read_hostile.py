"""Issue #21, a hostile-input probe of the readers: each finding as the attack that showed it.

Bad input is data: a dead letter, a count under ``skipped`` or a one-line ``ReaderError``; never a
traceback, a hang or a silent drop. Each test here failed before its fix.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from readers_support import DATA, FIXTURES, capture, query, run

from fleetlog.ingest import contract as c
from fleetlog.ingest.readers import (
    inputs,
    kmsg,
    nvidia_smi_csv,
    nvidia_smi_xml,
    perfquery,
    prometheus,
    sacct,
    sysfs_ib,
)
from fleetlog.ingest.readers.base import UNTAKEN, Collector, ReadOptions, ReadResult
from fleetlog.ingest.readers.errors import ReaderError
from fleetlog.ingest.readers.registry import read_path

AT = datetime(2025, 3, 1, 12, tzinfo=UTC)
MIDNIGHT = "slurm/sample-sacct-output-midnight-edge-case.txt"
T4 = "nvidia_smi/telegraf__nvidia-smi-q-x__tesla-t4.xml"
LOAD_CSV = "nvidia_smi/extracted/h100__query-gpu.load.csv"
GPUD_TAR = "network/gpud__sys-class-infiniband-h100.0.tar.gz"
GPUD_FLAT = "network/gpud__sys-class-infiniband-h100.0.flat.tsv"
PQ_SWITCH = "network/infiniband_exporter/perfquery__0x7cfe9003009ce5b0.out"
T4_METRICS = FIXTURES / "dcgm" / "datadog__dcgm-exporter-tesla-t4.metrics"


def _xid_log(lines: int) -> bytes:
    """A ``dmesg --time-format iso`` log: every 4th line an XID, the rest other kernel lines."""
    out = []
    for i in range(lines):
        stamp = f"2025-01-21T04:{i // 3600 % 60:02d}:{i // 60 % 60:02d},{i % 60:06d}+00:00"
        if i % 4 == 0:
            out.append(f"{stamp} NVRM: Xid (PCI:0000:9b:00): 79, pid={i}, GPU has fallen off "
                       "the bus.")
        else:
            out.append(f"{stamp} mlx5_core 0000:1f:00.0: port {i} link up, padding padding")
    return ("\n".join(out) + "\n").encode()


@contextlib.contextmanager
def _pipe(data: bytes) -> Iterator[Path]:
    """A pipe holding ``data`` (written by a thread), named the way ``<(cmd)`` names it."""
    read_fd, write_fd = os.pipe()

    def feed() -> None:
        with contextlib.suppress(BrokenPipeError), os.fdopen(write_fd, "wb") as handle:
            handle.write(data)

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    try:
        yield Path(f"/dev/fd/{read_fd}")
    finally:
        os.close(read_fd)
        writer.join(timeout=10)


def _accounted(result: ReadResult) -> None:
    assert UNTAKEN not in result.skipped
    assert result.lines is not None
    assert sum(result.line_outcomes.values()) == result.lines


# ------------------------------------------------------------------------------------------------
# 1. A pipe with --format auto: sniffing must not eat the first 64 KiB


def test_a_piped_log_on_stdin_lands_what_the_file_lands(tmp_path: Path) -> None:
    data = _xid_log(3000)
    assert len(data) > 3 * 64 * 1024
    log = tmp_path / "big.log"
    log.write_bytes(data)
    from_file = read_path(log, "auto", ReadOptions(node="n1"))
    assert len(from_file.events) == 750
    db = tmp_path / "q.duckdb"
    done = subprocess.run(
        [sys.executable, "-m", "fleetlog", "import", "--node", "n1", "--to", f"duckdb:{db}",
         "/dev/stdin"], input=data, capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode()
    assert query(db, "SELECT count(*) FROM xid_events")[0][0] == 750
    assert b'"lines": 3000' in done.stdout


def test_process_substitution_of_a_sacct_file_is_read_whole(tmp_path: Path) -> None:
    data = capture(MIDNIGHT).read_bytes()
    with _pipe(data) as pipe:
        result = read_path(pipe, "auto", ReadOptions(tz=UTC))
    assert result.format == "sacct" and len(result.events) == 612 and not result.dead
    with _pipe(data) as pipe:  # --format given: the same bytes, read once
        assert len(read_path(pipe, "sacct", ReadOptions(tz=UTC)).events) == 612


def test_a_piped_tarball_is_recognised_by_its_content() -> None:
    opts = ReadOptions(node="n1", time=AT)
    from_file = read_path(capture(GPUD_TAR), "auto", opts)
    with _pipe(capture(GPUD_TAR).read_bytes()) as pipe:
        result = read_path(pipe, "auto", opts)
    assert result.format == "sysfs-ib" and len(result.events) == 9
    assert [e.id for e in result.events] == [e.id for e in from_file.events]


# ------------------------------------------------------------------------------------------------
# 5. Bounds: devices, FIFOs, links out of the folder, inputs and lines beyond the limits


@pytest.mark.timeout(30)
@pytest.mark.parametrize("fmt", ["auto", "kmsg", "sysfs-ib", "nvidia-smi-xml"])
def test_device_files_are_refused_in_one_line(tmp_path: Path, fmt: str) -> None:
    code, _, err = run("import", "--to", f"duckdb:{tmp_path / 'f.duckdb'}", "--node", "n",
                       "--format", fmt,
                       "/dev/zero")
    assert code == 1
    assert err.strip().splitlines() == [
        "Error: /dev/zero is a device file, not a capture (it may never end): save its output "
        "to a file and import that (e.g. dmesg --time-format iso > dmesg.log)"]
    assert not (tmp_path / "f.duckdb").exists()


@pytest.mark.timeout(30)
def test_a_named_pipe_is_refused_not_waited_for(tmp_path: Path) -> None:
    fifo = tmp_path / "kmsg.fifo"
    os.mkfifo(fifo)
    code, _, err = run("import", "--to", f"duckdb:{tmp_path / 'f.duckdb'}", "--node", "n", fifo)
    assert code == 1
    assert err.strip() == (
        f"Error: {fifo} is a named pipe (FIFO): fleetlog does not open one (it waits for a "
        f"writer); redirect it instead: fleetlog import ... /dev/stdin < {fifo}")


@pytest.mark.timeout(60)
def test_a_named_pipe_redirected_to_stdin_is_read(tmp_path: Path) -> None:
    fifo = tmp_path / "sacct.fifo"
    os.mkfifo(fifo)
    data = _xid_log(40)

    def feed() -> None:
        with fifo.open("wb") as handle:
            handle.write(data)

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    with fifo.open("rb") as stdin:
        done = subprocess.run(
            [sys.executable, "-m", "fleetlog", "import", "--node", "n1", "--to",
             f"duckdb:{tmp_path / 'f.duckdb'}", "/dev/stdin"],
            stdin=stdin, capture_output=True, timeout=60, check=False)
    writer.join(timeout=10)
    assert done.returncode == 0, done.stderr.decode()
    assert query(tmp_path / "f.duckdb", "SELECT count(*) FROM xid_events")[0][0] == 10


def test_an_input_beyond_the_limit_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(inputs, "MAX_INPUT", 64 * 1024)
    data = _xid_log(2000)
    log = tmp_path / "big.log"
    log.write_bytes(data)
    for source in (log, None):
        with contextlib.ExitStack() as stack:
            path = source or stack.enter_context(_pipe(data))
            with pytest.raises(ReaderError) as caught:
                read_path(path, "auto", ReadOptions(node="n1"))
        message = str(caught.value)
        assert message == (f"{path} is larger than 65,536 bytes, the limit of one input: split "
                           "it (e.g. split -l 1000000) and import the parts")


def test_a_line_beyond_the_limit_is_a_dead_letter_and_the_rest_is_read(tmp_path: Path) -> None:
    lines = _xid_log(8).splitlines()
    giant = b"2025-01-21T04:00:00,000000+00:00 NVRM: Xid (PCI:0000:9b:00): 79, " + (
        b"x" * inputs.MAX_LINE)
    log = tmp_path / "giant.log"
    log.write_bytes(b"\n".join([*lines[:4], giant, *lines[4:]]) + b"\n")
    result = kmsg.read(log, ReadOptions(node="n1"))
    assert len(result.events) == 2  # the two XIDs of the 8 good lines
    [letter] = result.dead
    assert letter.offset == 5 and letter.error.startswith("line is longer than 1 MiB (")
    assert letter.raw is not None and len(letter.raw) == 4096
    _accounted(result)


def _ib_folder(root: Path) -> Path:
    counters = root / "mlx5_0" / "ports" / "1" / "counters"
    counters.mkdir(parents=True)
    (counters / "symbol_error").write_text("5\n")
    (counters.parent / "state").write_text("4: ACTIVE\n")
    return counters


def test_a_counter_linked_out_of_the_folder_is_refused_and_never_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    counters = _ib_folder(tmp_path / "ib")
    (counters / "port_rcv_errors").symlink_to(secret)
    elsewhere = tmp_path / "elsewhere" / "counters"
    elsewhere.mkdir(parents=True)
    (elsewhere / "link_downed").write_text("root:x:0:0\n")
    (tmp_path / "ib" / "mlx5_0" / "ports" / "2").mkdir()
    (tmp_path / "ib" / "mlx5_0" / "ports" / "2" / "counters").symlink_to(elsewhere)
    db = tmp_path / "f.duckdb"
    code, _, err = run("import", "--to", f"duckdb:{db}", "--node", "n", "--time",
                       "2025-03-01T12:00:00Z", tmp_path / "ib")
    assert code == 0, err
    rows = query(db, 'SELECT origin, error, raw FROM dead_letters ORDER BY origin')
    assert rows == [
        (f"{tmp_path / 'ib'}:mlx5_0/ports/1/counters/port_rcv_errors",
         "a link to outside its HCA's folder (the folder being read): not followed", None),
        (f"{tmp_path / 'ib'}:mlx5_0/ports/2/counters/link_downed",
         "a link to outside its HCA's folder (the folder being read): not followed", None),
    ]
    assert query(db, "SELECT symbol_error, link_state FROM port_samples WHERE port = 1") == [
        (5, 4)]


@pytest.mark.timeout(30)
def test_fifos_and_devices_inside_a_folder_are_dead_letters_not_hangs(tmp_path: Path) -> None:
    counters = _ib_folder(tmp_path / "ib")
    os.mkfifo(counters / "port_xmit_data")
    (counters / "port_rcv_data").symlink_to("/dev/zero")  # leaves the folder: not even opened
    result = sysfs_ib.read(tmp_path / "ib", ReadOptions(node="n", time=AT))
    errors = {d.origin.rsplit("/", 1)[-1]: d.error for d in result.dead}
    assert errors == {
        "port_xmit_data": "not a regular file (a FIFO, a device or a socket): not read",
        "port_rcv_data": "a link to outside its HCA's folder (the folder being read): not "
                         "followed",
    }
    assert len(result.events) == 1


def test_a_folder_beyond_the_limit_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(inputs, "MAX_INPUT", 4)
    _ib_folder(tmp_path / "ib")
    with pytest.raises(ReaderError, match="larger than 4 bytes, the limit of one input"):
        read_path(tmp_path / "ib", "auto", ReadOptions(node="n", time=AT))


def test_a_decompression_bomb_stops_at_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(inputs, "MAX_INPUT", 1 << 20)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        member = tarfile.TarInfo("ib/mlx5_0/ports/1/counters/symbol_error")
        member.size = 64 << 20  # 64 MiB of zeros: ~64 KiB compressed
        archive.addfile(member, io.BytesIO(bytes(member.size)))
    bomb = tmp_path / "bomb.tar.gz"
    bomb.write_bytes(buffer.getvalue())
    with pytest.raises(ReaderError, match=r"larger than 1 MiB, the limit of one input \(a "
                                          r"tarball after decompression\)"):
        read_path(bomb, "auto", ReadOptions(node="n", time=AT))


# ------------------------------------------------------------------------------------------------
# 6. Tracebacks: huge hex values, a corrupt tarball


def test_a_300_digit_hex_value_is_a_dead_letter_in_csv_and_xml() -> None:
    huge = "0x" + "f" * 300
    text = f"index, clocks_event_reasons.active, power.draw [W]\n0, {huge}, 70 W\n"
    csv_result = nvidia_smi_csv.parse(text.encode(), origin="x", opts=ReadOptions(node="n"),
                                      default_time_us=0)
    [letter] = csv_result.dead
    assert letter.error.startswith("clocks_event_reasons.active value '0xffff")
    assert letter.offset == 2
    assert len(csv_result.events) == 1  # the row keeps its power
    doc = capture(T4).read_bytes().replace(b"<replay_counter>0</replay_counter>",
                                           f"<replay_counter>{huge}</replay_counter>".encode())
    assert huge.encode() in doc
    xml_result = nvidia_smi_xml.parse(doc, origin="x", opts=ReadOptions(node="n", tz=UTC))
    [letter] = xml_result.dead
    assert letter.error.startswith("<pci/replay_counter> value '0xffff")
    assert [e.type for e in xml_result.events] == ["gpu.registered", "gpu.sampled"]


def _flipped_until_zlib_fails(data: bytes) -> bytes:
    """The first single-byte flip of ``data`` that makes tarfile fail with zlib.error (what
    the probe found: a traceback)."""
    import zlib

    for offset in range(20, len(data)):
        damaged = bytearray(data)
        damaged[offset] ^= 0xFF
        try:
            with tarfile.open(fileobj=io.BytesIO(bytes(damaged))) as archive:
                for member in archive:
                    handle = archive.extractfile(member) if member.isfile() else None
                    if handle:
                        handle.read()
        except zlib.error:
            return bytes(damaged)
        except (tarfile.TarError, OSError, EOFError):
            continue
    raise AssertionError("no flip broke the stream")


def test_a_corrupt_or_truncated_tarball_is_a_dead_letter(tmp_path: Path) -> None:
    data = capture(GPUD_TAR).read_bytes()
    corrupt = tmp_path / "corrupt.tar.gz"
    corrupt.write_bytes(_flipped_until_zlib_fails(data))
    code, _, err = run("import", "--to", f"duckdb:{tmp_path / 'f.duckdb'}", "--node", "n", corrupt)
    assert code == 0, err
    [letter] = query(tmp_path / "f.duckdb", "SELECT error FROM dead_letters")
    assert letter[0].startswith("tarball: gzip data is damaged after ")
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(data[:6000])
    result = read_path(truncated, "auto", ReadOptions(node="n", time=AT))
    assert [d.error.split(" (")[0] for d in result.dead] == ["tarball: gzip data is truncated"]
    assert result.events  # the members before the cut


# ------------------------------------------------------------------------------------------------
# 7. Splitting concatenated nvidia-smi XML is linear (bench/xml_split.py times it)


class _CountingBytes(bytes):
    """Bytes that add up how many bytes ``count`` scans."""

    scanned = 0

    def count(self, sub: object, start: object = None, end: object = None) -> int:  # type: ignore[override]
        lo = 0 if start is None else int(start)  # type: ignore[call-overload]
        hi = len(self) if end is None else int(end)  # type: ignore[call-overload]
        type(self).scanned += max(0, hi - lo)
        return super().count(sub, start, end)  # type: ignore[arg-type]


def test_splitting_concatenated_documents_scans_the_input_a_bounded_number_of_times() -> None:
    doc = capture(T4).read_bytes()
    data = _CountingBytes(doc * 200)
    _CountingBytes.scanned = 0
    docs = nvidia_smi_xml._documents(data)
    assert len(docs) == 200
    assert [d[0] for d in docs[:3]] == [1, doc.count(b"\n") + 1, 2 * doc.count(b"\n") + 1]
    assert _CountingBytes.scanned <= 2 * len(data)  # was ~100x: each document from the start


# ------------------------------------------------------------------------------------------------
# 8. Silent drops: CR-only line ends, more than 256 GPUs, a byte order mark


def _cr_only(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r")


@pytest.mark.parametrize("case", ["sacct", "dcgm", "perfquery", "sysfs-listing", "csv"])
def test_cr_only_line_ends_read_like_lf(tmp_path: Path, case: str) -> None:
    source, opts = {
        "sacct": (MIDNIGHT, ReadOptions(tz=UTC)),
        "dcgm": (str(T4_METRICS), ReadOptions(node="n", time=AT)),
        "perfquery": (PQ_SWITCH, ReadOptions(node="sw", time=AT)),
        "sysfs-listing": (GPUD_FLAT, ReadOptions(node="n", time=AT)),
        "csv": (LOAD_CSV, ReadOptions(node="n", tz=UTC)),
    }[case]
    original = Path(source) if source.startswith("/") else capture(source)
    lf = read_path(original, "auto", opts)
    cr = tmp_path / "cr.txt"
    cr.write_bytes(_cr_only(original.read_bytes()))
    result = read_path(cr, "auto", opts)
    assert result.format == lf.format
    assert [e.id for e in result.events] == [e.id for e in lf.events] and result.events
    assert len(result.dead) == len(lf.dead) and result.skipped == lf.skipped
    assert any("carriage return only" in n for n in result.notes)
    _accounted(result)


@pytest.mark.parametrize("case", ["sacct", "csv", "dcgm", "xml"])
def test_a_utf8_byte_order_mark_is_dropped(tmp_path: Path, case: str) -> None:
    source, opts = {
        "sacct": (MIDNIGHT, ReadOptions(tz=UTC)),
        "csv": (LOAD_CSV, ReadOptions(node="n", tz=UTC)),
        "dcgm": (str(T4_METRICS), ReadOptions(node="n", time=AT)),
        "xml": (T4, ReadOptions(node="n", tz=UTC)),
    }[case]
    original = Path(source) if source.startswith("/") else capture(source)
    plain = read_path(original, "auto", opts)
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbf" + original.read_bytes())
    result = read_path(bom, "auto", opts)
    assert result.format == plain.format
    assert [e.id for e in result.events] == [e.id for e in plain.events] and result.events
    assert not result.dead


def test_utf16_as_powershell_writes_it_is_converted(tmp_path: Path) -> None:
    original = capture(MIDNIGHT)
    plain = read_path(original, "auto", ReadOptions(tz=UTC))
    utf16 = tmp_path / "jobs.txt"
    utf16.write_bytes(original.read_text().replace("\n", "\r\n").encode("utf-16"))
    result = read_path(utf16, "auto", ReadOptions(tz=UTC))
    assert [e.id for e in result.events] == [e.id for e in plain.events]
    assert "input is UTF-16: converted to UTF-8" in result.notes


def test_gpus_beyond_the_256th_are_counted_and_said() -> None:
    doc = capture(T4).read_text()
    start, end = doc.index("<gpu "), doc.index("</gpu>") + len("</gpu>")
    many = doc[:start] + doc[start:end] * 300 + doc[end:]
    result = nvidia_smi_xml.parse(many.encode(), origin="x", opts=ReadOptions(node="n", tz=UTC))
    [payload] = [e.payload for e in result.events if e.type == "gpu.sampled"]
    assert isinstance(payload, c.GpuSampled) and payload.rows == 256
    assert result.skipped["<gpu> elements beyond the 256th of a document (GPU index 0-255)"] == 44
    assert any("lists 300 <gpu> elements: the first 256 were read" in n for n in result.notes)


# ------------------------------------------------------------------------------------------------
# Other silent drops the ledger found


def test_perfquery_counters_outside_any_port_section_are_dead_letters() -> None:
    text = capture(PQ_SWITCH).read_text().split("\n")
    headless = "\n".join(line for line in text if not line.startswith("#"))
    result = perfquery.parse(headless.encode(), origin="x", opts=ReadOptions(node="sw"),
                             default_time_us=0)
    # PortSelect opens a section; only lines before the first one are outside any.
    assert result.events
    _accounted(result)
    orphan = perfquery.parse(b"PortXmitData:....................1\n", origin="x",
                             opts=ReadOptions(node="sw"), default_time_us=0)
    assert [d.error for d in orphan.dead] == [
        "counter line outside a port section (no '# Port counters: ... port N' header or "
        "PortSelect before it)"]


def test_sacct_records_with_no_time_yet_are_counted() -> None:
    text = ("JobID|State|Submit|Start|End\n"
            "1|PENDING|Unknown|Unknown|Unknown\n"
            "2|PENDING|2025-01-01T00:00:00|Unknown|Unknown\n")
    result = sacct.parse(text.encode(), origin="x", opts=ReadOptions(tz=UTC))
    assert len(result.events) == 1
    assert result.skipped == {
        "records with nothing to land yet (Submit, Start and End unknown)": 1}
    _accounted(result)


def test_long_xid_messages_and_many_notes_are_cut_and_counted() -> None:
    line = ("2025-01-21T04:41:44,283302+00:00 NVRM: Xid (PCI:0000:9b:00): 79, " + "m" * 3000
            + "\n").encode()
    result = kmsg.parse(line, origin="x", opts=ReadOptions(node="n"))
    payload = result.events[0].payload
    assert isinstance(payload, c.XidReported) and len(payload.message) == 2000
    assert result.skipped == {"XID messages cut to their first 2,000 characters": 1}
    out = Collector("x", "f", "s")
    for i in range(25):
        out.note(f"note {i}")
    assert out.done().notes == [f"note {i}" for i in range(20)] + ["5 more notes not shown"]


def test_prometheus_lines_are_all_accounted_for() -> None:
    result = prometheus.parse(T4_METRICS.read_bytes(), origin="x", opts=ReadOptions(node="n"),
                              default_time_us=0)
    _accounted(result)
    assert result.line_outcomes["taken"] == result.lines - result.line_outcomes["skipped"]


def test_every_capture_has_every_line_accounted_for() -> None:
    if not DATA.exists():
        pytest.skip(f"shared/data not found at {DATA}")
    from test_read_import import READABLE

    for relative, options, fmt, _ in READABLE:
        opts = ReadOptions(node="n", tz=UTC, time=AT) if "--node" in options else ReadOptions(
            tz=UTC, time=AT)
        result = read_path(DATA / relative, "auto", opts)
        assert result.format == fmt
        if result.lines is not None:
            _accounted(result)
            assert result.line_outcomes.get("dead", 0) == 0, relative
