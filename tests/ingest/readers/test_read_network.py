"""InfiniBand: perfquery output and /sys/class/infiniband counters into port samples."""

from __future__ import annotations

import math
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from readers_support import capture, query, run

from fleetlog.ingest import contract as c
from fleetlog.ingest.readers import perfquery, sysfs_ib
from fleetlog.ingest.readers.base import ReadOptions
from fleetlog.ingest.readers.errors import MissingOption

AT = "2025-03-01T12:00:00Z"
AT_DT = datetime(2025, 3, 1, 12, tzinfo=UTC)
GPUD_TAR = "network/gpud__sys-class-infiniband-h100.0.tar.gz"
GPUD_FLAT = "network/gpud__sys-class-infiniband-h100.0.flat.tsv"
TTAR = "network/node_exporter__sys.ttar__class_infiniband.ttar"
PQ_SWITCH = "network/infiniband_exporter/perfquery__0x7cfe9003009ce5b0.out"
PQ_OTHER = "network/infiniband_exporter/perfquery__0x506b4b03005c2740.out"
PQ_DETAILS = "network/infiniband_exporter/perfquery-rcv-error__0x7cfe9003009ce5b0-1.out"


def _ports(events: list[c.Envelope]) -> dict[tuple[str, int], dict[str, float]]:
    out = {}
    for event in events:
        payload = event.payload
        assert isinstance(payload, c.PortSampled)
        offset = 0
        for switch, count in zip(payload.switches, payload.port_count, strict=True):
            for i in range(offset, offset + count):
                port = int.from_bytes(payload.port[2 * i:2 * i + 2], "little")
                out[(switch, port)] = {
                    col: float(c.unpack_column(d, c.PORT_SIGNAL_BY_COLUMN[col])[i])
                    for col, d in payload.columns.items()
                }
            offset += count
    return out


def _sysfs_truth(path: Path) -> dict[tuple[str, int], dict[str, str]]:
    """The capture's own values, read from the tarball without the reader (the oracle)."""
    names = {"port_xmit_data": "xmit_data", "port_rcv_data": "rcv_data",
             "symbol_error": "symbol_error", "port_rcv_errors": "rcv_errors",
             "link_downed": "link_downed", "link_error_recovery": "link_error_recovery",
             "port_xmit_discards": "xmit_discards"}
    truth: dict[tuple[str, int], dict[str, str]] = {}
    with tarfile.open(path) as archive:
        for member in archive.getmembers():
            parts = member.name.split("/")
            if member.isfile() and len(parts) >= 5 and parts[2] == "ports":
                handle = archive.extractfile(member)
                assert handle is not None
                value = handle.read().decode().strip()
                key = (f"gpu-node-1/{parts[1]}", int(parts[3]))
                if parts[4] == "counters" and parts[5] in names:
                    truth.setdefault(key, {})[names[parts[5]]] = value
                elif parts[4] == "state":
                    truth.setdefault(key, {})["link_state"] = value.split(":")[0]
    return truth


def test_gpud_sysfs_tarball_lands_every_hca_port(tmp_path: Path) -> None:
    path = capture(GPUD_TAR)
    db = tmp_path / "f.duckdb"
    code, out, err = run("import", "--to", f"duckdb:{db}", "--node", "gpu-node-1", "--time", AT,
                         path)
    assert code == 0, err
    assert out["files"][0]["format"] == "sysfs-ib" and out["dead_letters"] == 0
    truth = _sysfs_truth(path)
    assert len(truth) == 9  # mlx5_0,1,4..9 and mlx5_bond_0, port 1 each
    rows = query(db, "SELECT switch, port, xmit_data, rcv_data, symbol_error, rcv_errors, "
                     "link_downed, link_error_recovery, xmit_discards, link_state, ts "
                     "FROM port_samples")
    cols = ["xmit_data", "rcv_data", "symbol_error", "rcv_errors", "link_downed",
            "link_error_recovery", "xmit_discards", "link_state"]
    landed = {(r[0], r[1]): dict(zip(cols, r[2:10], strict=True)) for r in rows}
    assert set(landed) == set(truth)
    for key, values in truth.items():
        assert {k: float(v) for k, v in values.items()} == landed[key], key
    assert {r[10] for r in rows} == {AT_DT}


def test_the_same_counters_from_flat_listing_tarball_and_folder(tmp_path: Path) -> None:
    opts = ReadOptions(node="gpu-node-1", time=AT_DT)
    from_tar = _ports(sysfs_ib.read(capture(GPUD_TAR), opts).events)
    flat = sysfs_ib.read(capture(GPUD_FLAT), opts)
    assert not flat.dead
    folder = tmp_path / "sys-class-infiniband"
    with tarfile.open(capture(GPUD_TAR)) as archive:
        archive.extractall(folder, filter="data")
    from_folder = sysfs_ib.read(folder, opts)
    assert _ports(flat.events) == from_tar == _ports(from_folder.events)


def test_grep_style_listing(tmp_path: Path) -> None:
    # What `grep -r . /sys/class/infiniband/*/ports/*/{counters,state}` prints.
    listing = tmp_path / "ib.txt"
    listing.write_text(
        "/sys/class/infiniband/mlx5_0/ports/1/counters/symbol_error:3\n"
        "/sys/class/infiniband/mlx5_0/ports/1/counters/link_downed:1\n"
        "/sys/class/infiniband/mlx5_0/ports/1/state:1: DOWN\n"
        "/sys/class/infiniband/mlx5_0/ports/1/counters/port_rcv_errors:lots\n"
    )
    result = sysfs_ib.read(listing, ReadOptions(node="n", time=AT_DT))
    assert _ports(result.events) == {
        ("n/mlx5_0", 1): {"symbol_error": 3, "link_downed": 1, "link_state": 1}}
    assert [d.offset for d in result.dead] == [4]


def test_node_exporter_ttar_no_pma_counters_are_missing_not_zero() -> None:
    ports = _ports(sysfs_ib.read(capture(TTAR), ReadOptions(node="h", time=AT_DT)).events)
    assert set(ports) == {("h/i40iw0", 1), ("h/mlx4_0", 1), ("h/mlx4_0", 2)}
    assert ports[("h/i40iw0", 1)] == {"link_state": 4.0}  # every counter "N/A (no PMA)"
    assert ports[("h/mlx4_0", 1)]["xmit_discards"] == 5
    assert math.isnan(ports[("h/mlx4_0", 2)]["xmit_discards"])  # no such file on port 2


def test_node_exporter_prometheus_and_sysfs_agree() -> None:
    from fleetlog.ingest.readers import prometheus

    via_sysfs = _ports(sysfs_ib.read(capture(TTAR), ReadOptions(node="h", time=AT_DT)).events)
    via_prom = _ports(prometheus.read(
        capture("network/node_exporter__e2e-output__node_infiniband.prom"),
        ReadOptions(node="h", time=AT_DT)).events)
    assert set(via_sysfs) == set(via_prom)
    for key, prom_row in via_prom.items():
        for column, value in prom_row.items():
            assert value == via_sysfs[key][column] or (
                math.isnan(value) and math.isnan(via_sysfs[key][column])), (key, column)


def test_sysfs_needs_a_node() -> None:
    with pytest.raises(MissingOption, match="--node"):
        sysfs_ib.read(capture(TTAR), ReadOptions())


def test_perfquery_switch_ports(tmp_path: Path) -> None:
    db = tmp_path / "f.duckdb"
    # ibnetdiscover__test.out names GUID 0x7cfe9003009ce5b0 'ib-i1l1s01'.
    code, out, err = run("import", "--to", f"duckdb:{db}", "--node", "ib-i1l1s01", "--time", AT,
                         capture(PQ_SWITCH))
    assert code == 0, err
    assert out["files"][0]["format"] == "perfquery"
    rows = query(db, "SELECT switch, port, xmit_data, rcv_data, link_downed, xmit_discards "
                     "FROM port_samples ORDER BY port")
    assert rows == [("ib-i1l1s01", 1, 36298026860928.0, 12279028775751.0, 0.0, 0.0),
                    ("ib-i1l1s01", 2, 26006570014026.0, 39078804993378.0, 0.0, 0.0)]


def test_perfquery_errors_and_details_sections() -> None:
    opts = ReadOptions(node="ib-i4l1s01", time=AT_DT)
    ports = _ports(perfquery.read(capture(PQ_OTHER), opts).events)
    assert ports[("ib-i4l1s01", 1)]["link_downed"] == 1
    assert ports[("ib-i4l1s01", 1)]["xmit_discards"] == 20046
    details = perfquery.read(capture(PQ_DETAILS), opts)
    assert not details.events and not details.dead  # error details: not contract counters
    assert details.skipped == {"sections that are not per-port counters": 1}


def test_perfquery_legacy_names_all_ports_sum_and_bad_lines() -> None:
    text = (
        "# Port counters: Lid 5 port 3\n"
        "PortSelect:......................3\n"
        "SymbolErrorCounter:..............12\n"
        "XmtData:.........................100\n"
        "RcvData:.........................oops\n"
        "# Port extended counters: Lid 5 port 255 (CapMask: 0x5300)\n"
        "PortXmitData:....................999999\n"
        "garbage\n"
    )
    result = perfquery.parse(text.encode(), origin="pq", opts=ReadOptions(node="leaf-1"),
                             default_time_us=0)
    ports = _ports(result.events)
    assert ports == {("leaf-1", 3): {"symbol_error": 12, "xmit_data": 100}}
    assert [d.offset for d in result.dead] == [5, 8]
    assert result.skipped == {"all-ports sums (port 255)": 1}


def test_perfquery_needs_the_device_name() -> None:
    with pytest.raises(MissingOption, match="--node"):
        perfquery.read(capture(PQ_SWITCH), ReadOptions())


def test_live_folder_with_symlinked_hcas_like_sys(tmp_path: Path) -> None:
    # /sys/class/infiniband/mlx5_0 -> ../../devices/.../infiniband/mlx5_0
    device = tmp_path / "devices" / "pci0000:00" / "infiniband" / "mlx5_0" / "ports" / "1"
    (device / "counters").mkdir(parents=True)
    (device / "counters" / "link_downed").write_text("2\n")
    (device / "counters" / "port_rcv_errors").write_text("N/A (no PMA)\n")
    (device / "state").write_text("4: ACTIVE\n")
    klass = tmp_path / "class" / "infiniband"
    klass.mkdir(parents=True)
    (klass / "mlx5_0").symlink_to(device.parents[1])
    result = sysfs_ib.read(klass, ReadOptions(node="gpu-node-1", time=AT_DT))
    ports = _ports(result.events)
    assert set(ports) == {("gpu-node-1/mlx5_0", 1)}
    assert ports[("gpu-node-1/mlx5_0", 1)]["link_downed"] == 2
    assert ports[("gpu-node-1/mlx5_0", 1)]["link_state"] == 4
    assert math.isnan(ports[("gpu-node-1/mlx5_0", 1)].get("rcv_errors", math.nan))
