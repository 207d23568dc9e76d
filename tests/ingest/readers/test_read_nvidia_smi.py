"""nvidia-smi: --query-gpu CSV (units or not, header or not) and -q -x XML across drivers."""

from __future__ import annotations

import csv
import io
import math
from datetime import UTC, datetime
from pathlib import Path

import pytest
from readers_support import capture, query, run

from fleetlog.ingest import contract as c
from fleetlog.ingest.readers import nvidia_smi_csv, nvidia_smi_xml
from fleetlog.ingest.readers.base import ReadOptions, parse_tz
from fleetlog.ingest.readers.errors import MissingOption, ReaderError

UTC_OPTS = ReadOptions(node="h100-box", tz=UTC)
LOAD = "nvidia_smi/extracted/h100__query-gpu.load.csv"
IDLE = "nvidia_smi/extracted/h100__query-gpu.idle.csv"
A100 = "nvidia_smi/telegraf__nvidia-smi-q-x__a100-sxm4-v12.xml"
T4 = "nvidia_smi/telegraf__nvidia-smi-q-x__tesla-t4.xml"


def _rows(events: list[c.Envelope]) -> list[dict[str, float]]:
    rows = []
    for event in events:
        payload = event.payload
        if isinstance(payload, c.GpuRegistered):
            continue  # the GPU's inventory (PCI address), beside its samples
        assert isinstance(payload, c.GpuSampled)
        for i, gpu in enumerate(payload.gpu):
            row = {col: float(c.unpack_column(d, c.GPU_SIGNAL_BY_COLUMN[col])[i])
                   for col, d in payload.columns.items()}
            rows.append({"gpu": gpu, "time_us": event.time_us, **row})
    return rows


def _nounits(text: str) -> str:
    """What `--format=csv,nounits` prints for the same query: no units in header or values."""
    out = io.StringIO()
    reader = csv.reader(io.StringIO(text), skipinitialspace=True)
    header = [h.split(" [")[0] for h in next(reader)]
    out.write(", ".join(header) + "\n")
    for row in reader:
        cells = []
        for h, v in zip(header, row, strict=True):
            if v.startswith("[") or h == "timestamp" or h == "name":
                cells.append(v)
            else:
                cells.append(v.split(" ")[0])
        out.write(", ".join(cells) + "\n")
    return out.getvalue()


def test_query_gpu_load_capture_lands_the_values_it_shows(tmp_path: Path) -> None:
    db = tmp_path / "f.duckdb"
    code, out, err = run("import", "--to", f"duckdb:{db}", "--tz", "UTC", "--node", "h100-box",
                         capture(LOAD))
    assert code == 0, err
    assert out["files"][0]["format"] == "nvidia-smi-csv" and out["dead_letters"] == 0
    rows = query(db, "SELECT ts, node, gpu, util_pct, sm_clock_mhz, gpu_temp_c, mem_temp_c, "
                     "power_w, fb_used_mib, ecc_sbe_vol_total, ecc_dbe_vol_total, "
                     "row_remap_pending, row_remap_failure, throttle_reasons, pcie_replays "
                     "FROM gpu_samples")
    assert len(rows) == 1  # count = 1 in the capture
    ts, node, gpu, util, sm, temp, mtemp, power, fb, sbe, dbe, pend, fail, thr, replays = rows[0]
    # The capture bundle's header says collected_at 2026-07-14T08:12:38Z (a UTC machine).
    assert ts == datetime(2026, 7, 14, 8, 12, 53, 353000, tzinfo=UTC)
    assert (node, gpu, util, sm, temp, mtemp, fb) == ("h100-box", 0, 100, 1980, 59, 54, 19818)
    assert power == pytest.approx(631.95)
    assert (sbe, dbe, pend, fail, thr) == (0, 0, 0, 0, 0)
    assert replays is None  # not a --query-gpu field: not reported, not 0


def test_idle_capture_reads_the_idle_clock_event_bit() -> None:
    rows = _rows(nvidia_smi_csv.read(capture(IDLE), UTC_OPTS).events)
    assert rows[0]["throttle_reasons"] == 1.0  # 0x0000000000000001 = GPU idle
    assert rows[0]["util_pct"] == 0 and rows[0]["sm_clock_mhz"] == 345


def test_nounits_gives_the_same_rows() -> None:
    text = capture(LOAD).read_text()
    with_units = nvidia_smi_csv.parse(text.encode(), origin="u", opts=UTC_OPTS, default_time_us=0)
    without = nvidia_smi_csv.parse(_nounits(text).encode(), origin="n", opts=UTC_OPTS,
                                   default_time_us=0)
    assert not without.dead
    assert _rows(with_units.events) == _rows(without.events)


def test_noheader_needs_fields_and_then_reads_the_same(tmp_path: Path) -> None:
    text = capture(LOAD).read_text()
    header, body = text.split("\n", 1)
    path = tmp_path / "noheader.csv"
    path.write_text(body)
    with pytest.raises(MissingOption, match="--fields"):
        nvidia_smi_csv.read(path, UTC_OPTS)
    fields = tuple(h.split(" [")[0].strip() for h in header.split(","))
    opts = ReadOptions(node="h100-box", tz=UTC, fields=fields)
    assert _rows(nvidia_smi_csv.read(path, opts).events) == _rows(
        nvidia_smi_csv.parse(text.encode(), origin="x", opts=UTC_OPTS, default_time_us=0).events)


def test_timestamp_without_tz_is_refused_not_guessed() -> None:
    with pytest.raises(MissingOption, match="--tz"):
        nvidia_smi_csv.read(capture(LOAD), ReadOptions(node="x"))


def test_tz_shifts_the_local_timestamp() -> None:
    opts = ReadOptions(node="x", tz=parse_tz("America/New_York"))
    [event] = [e for e in nvidia_smi_csv.read(capture(LOAD), opts).events
               if e.type == "gpu.sampled"]
    assert event.time == datetime(2026, 7, 14, 12, 12, 53, 353000, tzinfo=UTC)  # EDT = UTC-4


def test_a_looping_capture_becomes_one_event_per_scrape() -> None:
    text = (
        "timestamp, index, temperature.gpu, power.draw [W], hostname\n"
        "2025/01/01 00:00:00.100, 0, 40, 100.00 W, node-a\n"
        "2025/01/01 00:00:00.120, 1, 41, [N/A], node-a\n"
        "2025/01/01 00:00:10.100, 0, 42, 101.00 W, node-a\n"
        "2025/01/01 00:00:10.110, 1, 43, 102.00 W, node-a\n"
    )
    result = nvidia_smi_csv.parse(text.encode(), origin="loop", opts=ReadOptions(tz=UTC),
                                  default_time_us=0)
    assert [e.key for e in result.events if e.type == "gpu.sampled"] == ["node:node-a",
                                                                         "node:node-a"]
    rows = _rows(result.events)
    assert [r["gpu"] for r in rows] == [0, 1, 0, 1]
    assert math.isnan(rows[1]["power_w"])  # [N/A] is missing, not zero
    assert result.events[0].time == datetime(2025, 1, 1, 0, 0, 0, 100000, tzinfo=UTC)


def test_query_without_index_is_a_clear_error() -> None:
    text = "timestamp, temperature.gpu\n2025/01/01 00:00:00.100, 40\n"
    with pytest.raises(ReaderError, match="add index to --query-gpu"):
        nvidia_smi_csv.parse(text.encode(), origin="x", opts=UTC_OPTS, default_time_us=0)


def test_bad_rows_are_dead_letters() -> None:
    text = ("index, temperature.gpu, memory.used [MiB]\n"
            "0, 40, 100 MiB\n"
            "1, hot, 100 MiB\n"
            "2, 40\n"
            "x, 1, 1\n")
    result = nvidia_smi_csv.parse(text.encode(), origin="x", opts=ReadOptions(node="n"),
                                  default_time_us=0)
    assert sorted(d.offset or 0 for d in result.dead) == [3, 4, 5]
    rows = _rows(result.events)
    assert [r["gpu"] for r in rows] == [0, 1]  # row 1 keeps what it could read
    assert math.isnan(rows[1].get("gpu_temp_c", math.nan)) and rows[1]["fb_used_mib"] == 100


def test_xml_a100_v12_driver_535(tmp_path: Path) -> None:
    db = tmp_path / "f.duckdb"
    code, out, err = run("import", "--to", f"duckdb:{db}", "--tz", "UTC", "--node", "a100-box",
                         capture(A100))
    assert code == 0, err
    assert out["files"][0]["format"] == "nvidia-smi-xml"
    # The file says attached_gpus=4 but telegraf trimmed it to one <gpu>; that is reported.
    assert "attached_gpus=4" in out["files"][0]["notes"][0]
    rows = query(db, "SELECT ts, gpu, util_pct, sm_clock_mhz, gpu_temp_c, mem_temp_c, power_w, "
                     "fb_used_mib, pcie_replays, throttle_reasons FROM gpu_samples")
    ts, gpu, util, sm, temp, mtemp, power, fb, replays, thr = rows[0]
    assert len(rows) == 1 and ts == datetime(2023, 8, 4, 11, 44, 30, tzinfo=UTC)
    assert (gpu, util, sm, temp, mtemp, fb, replays, thr) == (0, None, 1275, 27, 44, 50, 0, 0)
    assert power == pytest.approx(67.03)  # gpu_power_readings/power_draw (R535 layout)


def test_xml_tesla_t4_driver_515_older_layout() -> None:
    rows = _rows(nvidia_smi_xml.read(capture(T4), ReadOptions(node="t4", tz=UTC)).events)
    assert len(rows) == 1
    row = rows[0]
    assert row["power_w"] == pytest.approx(26.78)  # power_readings/power_draw (older layout)
    assert row["util_pct"] == 0 and row["gpu_temp_c"] == 40 and row["fb_used_mib"] == 1032
    assert math.isnan(row.get("mem_temp_c", math.nan))  # "N/A" on a T4
    assert row["throttle_reasons"] == 0  # clocks_throttle_reasons, all "Not Active"


def test_xml_pre_r510_ecc_layout_and_active_reasons() -> None:
    text = capture(T4).read_text()
    legacy = text.replace("<sram_correctable>0</sram_correctable>", "").replace(
        "<dram_correctable>0</dram_correctable>", "<single_bit><total>7</total></single_bit>", 1)
    legacy = legacy.replace(
        "<clocks_throttle_reason_sw_power_cap>Not Active</clocks_throttle_reason_sw_power_cap>",
        "<clocks_throttle_reason_sw_power_cap>Active</clocks_throttle_reason_sw_power_cap>")
    result = nvidia_smi_xml.parse(legacy.encode(), origin="x", opts=ReadOptions(node="t4", tz=UTC))
    row = _rows(result.events)[0]
    assert row["ecc_sbe_vol_total"] == 7
    assert row["throttle_reasons"] == 0x4


def test_xml_concatenated_documents_and_a_broken_one() -> None:
    doc = capture(T4).read_bytes()
    later = doc.replace(b"Mon Apr 24 16:22:39 2023", b"Mon Apr 24 16:22:49 2023")
    data = doc + later + b"<?xml version=\"1.0\"?>\n<nvidia_smi_log><gpu>\n"
    result = nvidia_smi_xml.parse(data, origin="x", opts=ReadOptions(node="t4", tz=UTC))
    assert [e.time.second for e in result.events if e.type == "gpu.sampled"] == [39, 49]
    assert len(result.dead) == 1 and result.dead[0].offset == 2 * doc.count(b"\n") + 1


def test_xml_needs_tz_and_node() -> None:
    with pytest.raises(MissingOption, match="--tz"):
        nvidia_smi_xml.read(capture(T4), ReadOptions(node="x"))
    with pytest.raises(MissingOption, match="--node"):
        nvidia_smi_xml.read(capture(T4), ReadOptions(tz=UTC))
