"""dcgm-exporter (and nvidia_gpu_exporter, node_exporter InfiniBand) Prometheus text."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import pytest
from readers_support import FIXTURES, capture, query, run

from fleetlog.ingest import contract as c
from fleetlog.ingest.readers import prometheus
from fleetlog.ingest.readers.base import ReadOptions
from fleetlog.ingest.readers.errors import MissingOption

T4 = FIXTURES / "dcgm" / "datadog__dcgm-exporter-tesla-t4.metrics"
README_K8S = FIXTURES / "dcgm" / "dcgm-exporter-readme__kubernetes.metrics"
AT = "2025-03-01T12:00:00Z"
AT_US = c.to_us(datetime(2025, 3, 1, 12, tzinfo=UTC))


def _parse(text: str, **opts: object) -> prometheus.ReadResult:
    return prometheus.parse(text.encode(), origin="test", opts=ReadOptions(**opts),  # type: ignore[arg-type]
                            default_time_us=AT_US)


def _row(result: prometheus.ReadResult, index: int = 0) -> dict[str, float]:
    payload = next(e.payload for e in result.events if e.type == "gpu.sampled")
    assert isinstance(payload, c.GpuSampled)
    row = list(payload.gpu).index(index)
    return {
        col: float(c.unpack_column(data, c.GPU_SIGNAL_BY_COLUMN[col])[row])
        for col, data in payload.columns.items()
    }


def test_real_t4_scrape_lands_one_gpu_with_its_values(tmp_path: Path) -> None:
    db = tmp_path / "f.duckdb"
    code, out, err = run("import", "--to", f"duckdb:{db}", "--time", AT, T4)
    assert code == 0, err
    assert out["files"][0]["format"] == "dcgm"
    assert out["dead_letters"] == 0
    rows = query(db, "SELECT ts, node, gpu, sm_clock_mhz, gpu_temp_c, power_w, fb_used_mib, "
                     "util_pct, pcie_replays, mem_temp_c, ecc_sbe_vol_total FROM gpu_samples")
    assert len(rows) == 1
    ts, node, gpu, sm, temp, power, fb, util, replays, mem_temp, sbe = rows[0]
    assert ts == datetime(2025, 3, 1, 12, tzinfo=UTC)
    assert (node, gpu, sm, temp, fb, util, replays) == ("424773df46e0", 0, 300, 25, 0, 0, 0)
    assert power == pytest.approx(8.969, rel=1e-6)
    assert mem_temp is None and sbe is None  # not in this scrape: NULL, never 0


def test_no_value_sentinel_is_null_not_a_huge_number(tmp_path: Path) -> None:
    db = tmp_path / "f.duckdb"
    code, out, err = run("import", "--to", f"duckdb:{db}", "--node", "k8s-node-1", "--time", AT,
                         README_K8S)
    assert code == 0, err
    assert out["files"][0]["skipped"] == {
        "DCGM no-value sentinels (kept as not reported)": 1,
        "series of families not in the contract": 1,  # DCGM_FI_DEV_MEM_CLOCK
    }
    rows = query(db, "SELECT node, gpu, sm_clock_mhz, mem_temp_c FROM gpu_samples")
    assert rows == [("k8s-node-1", 0, 139.0, None)]


def test_readme_capture_without_hostname_needs_node(tmp_path: Path) -> None:
    code, _, err = run("import", "--to", f"duckdb:{tmp_path / 'f.duckdb'}", README_K8S)
    assert code == 1
    assert err.strip().splitlines() == [
        "Error: DCGM_FI_DEV_SM_CLOCK (line 7) has no Hostname label: pass --node NAME"]


@pytest.mark.parametrize("sentinel", [
    "2147483632", "2147483635", "9223372036854775792", "9223372036854775795",
    "140737488355328", "140737488355331", "NaN",
])
def test_every_dcgm_blank_sentinel_is_missing(sentinel: str) -> None:
    result = _parse(f'DCGM_FI_DEV_GPU_TEMP{{gpu="0",Hostname="n1"}} {sentinel}\n'
                    'DCGM_FI_DEV_POWER_USAGE{gpu="0",Hostname="n1"} 0\n')
    row = _row(result)
    assert math.isnan(row.get("gpu_temp_c", math.nan))
    assert row["power_w"] == 0.0  # a real zero stays zero


def test_labels_variants_hostname_lowercase_pod_labels_and_sample_timestamp() -> None:
    text = (
        'DCGM_FI_DEV_GPU_TEMP{gpu="3",UUID="GPU-x",device="nvidia3",modelName="NVIDIA H100 80GB '
        'HBM3",hostname="gpu-node-7",pci_bus_id="00000000:9B:00.0",pod="train-0",'
        'namespace="ml",container="main"} 71 1740000000000\n'
    )
    result = _parse(text)
    registered, sampled = result.events
    assert registered.payload == c.GpuRegistered(
        node="gpu-node-7", gpu=3, pci_bus_id="0000:9b:00.0", uuid="GPU-x",
        model="NVIDIA H100 80GB HBM3")
    assert sampled.time_us == 1_740_000_000_000_000
    payload = sampled.payload
    assert isinstance(payload, c.GpuSampled) and payload.nodes == ["gpu-node-7"]
    assert _row(result, 3)["gpu_temp_c"] == 71


def test_node_option_wins_over_the_exporter_pod_hostname() -> None:
    text = 'DCGM_FI_DEV_GPU_TEMP{gpu="0",Hostname="nvidia-dcgm-exporter-cn9dw"} 40\n'
    payload = _parse(text, node="gpu-node-1").events[0].payload
    assert isinstance(payload, c.GpuSampled) and payload.nodes == ["gpu-node-1"]


def test_several_hosts_make_one_event_each_and_refuse_a_single_node() -> None:
    text = ('DCGM_FI_DEV_GPU_TEMP{gpu="0",Hostname="a"} 40\n'
            'DCGM_FI_DEV_GPU_TEMP{gpu="0",Hostname="b"} 41\n')
    result = _parse(text)
    assert [e.key for e in result.events] == ["node:a", "node:b"]
    with pytest.raises(MissingOption, match="several hosts"):
        _parse(text, node="x")


def test_mig_instances_fold_into_their_gpu() -> None:
    base = 'gpu="0",Hostname="n1",UUID="GPU-a"'
    text = (
        f'DCGM_FI_DEV_GPU_TEMP{{{base}}} 50\n'
        f'DCGM_FI_DEV_FB_USED{{{base},GPU_I_PROFILE="3g.40gb",GPU_I_ID="1"}} 1000\n'
        f'DCGM_FI_DEV_FB_USED{{{base},GPU_I_PROFILE="3g.40gb",GPU_I_ID="2"}} 500\n'
        f'DCGM_FI_DEV_GPU_UTIL{{{base},GPU_I_PROFILE="3g.40gb",GPU_I_ID="1"}} 30\n'
        f'DCGM_FI_DEV_GPU_UTIL{{{base},GPU_I_PROFILE="3g.40gb",GPU_I_ID="2"}} 80\n'
    )
    row = _row(_parse(text))
    assert row == {"gpu_temp_c": 50.0, "fb_used_mib": 1500.0, "util_pct": 80.0}


def test_renamed_clock_events_field_maps_to_throttle_reasons() -> None:
    text = 'DCGM_FI_DEV_CLOCKS_EVENT_REASONS{gpu="0",Hostname="n1"} 72\n'
    assert _row(_parse(text))["throttle_reasons"] == 72.0


def test_bad_lines_are_dead_letters_with_line_numbers() -> None:
    text = (
        'DCGM_FI_DEV_GPU_TEMP{gpu="0",Hostname="n1"} 45\n'
        "garbage line\n"
        'DCGM_FI_DEV_GPU_TEMP{gpu="x",Hostname="n1"} 5\n'
        'DCGM_FI_DEV_GPU_TEMP{gpu="2" 5\n'
        'DCGM_FI_DEV_GPU_TEMP{gpu="4",Hostname="n1"}\n'
        'DCGM_FI_DEV_GPU_TEMP{gpu="300",Hostname="n1"} 5\n'
        'DCGM_FI_DEV_GPU_TEMP{gpu="5",Hostname="n1"} +Inf\n'
    )
    result = _parse(text)
    assert sorted(d.offset or 0 for d in result.dead) == [2, 3, 4, 5, 6, 7]
    assert all(d.stage == "parse" and d.origin == "test" and d.raw for d in result.dead)
    assert _row(result)["gpu_temp_c"] == 45  # the good line still lands


def test_xid_gauge_is_not_turned_into_xid_events() -> None:
    result = _parse('DCGM_FI_DEV_XID_ERRORS{gpu="0",Hostname="n1"} 79\n')
    assert all(e.type == "gpu.sampled" for e in result.events)
    assert result.skipped["series of families not in the contract"] == 1


def test_nvidia_gpu_exporter_capture_maps_units() -> None:
    path = capture("nvidia_smi/nvidia_gpu_exporter__h100__load.metrics")
    result = prometheus.read(path, ReadOptions(node="h100-box"))
    assert not result.dead and [e.type for e in result.events] == ["gpu.registered",
                                                                    "gpu.sampled"]
    row = _row(result)
    # The same machine's nvidia-smi CSV (extracted/h100__query-gpu.load.csv) says: 100 %,
    # 1980 MHz, 59 C, 54 C, 631.95 W, 19818 MiB.
    assert row["util_pct"] == 100 and row["sm_clock_mhz"] == 1980
    assert (row["gpu_temp_c"], row["mem_temp_c"]) == (59, 54)
    assert row["power_w"] == pytest.approx(631.95)
    assert row["fb_used_mib"] == pytest.approx(19818, abs=1)


def test_node_exporter_infiniband_capture_gives_host_ports() -> None:
    path = capture("network/node_exporter__e2e-output__node_infiniband.prom")
    result = prometheus.read(path, ReadOptions(node="host1"))
    ports = {}
    for event in result.events:
        payload = event.payload
        assert isinstance(payload, c.PortSampled)
        for i, port in enumerate(payload.port[::2]):
            ports[(payload.switches[0], port)] = {
                col: float(c.unpack_column(d, c.PORT_SIGNAL_BY_COLUMN[col])[i])
                for col, d in payload.columns.items()
            }
    assert set(ports) == {("host1/i40iw0", 1), ("host1/mlx4_0", 1), ("host1/mlx4_0", 2)}
    mlx = ports[("host1/mlx4_0", 1)]
    assert mlx["xmit_data"] == 1.493376e7 / 4  # octets there, 32-bit words in the contract
    assert mlx["xmit_discards"] == 5 and mlx["link_state"] == 4
    with pytest.raises(MissingOption):
        prometheus.read(path, ReadOptions())
