"""Prometheus text (a /metrics scrape) -> ``gpu.sampled`` / ``port.sampled``.

Three exporters are understood, by metric family:

- dcgm-exporter: ``DCGM_FI_*`` with labels ``gpu``, ``UUID``, ``device``, ``modelName``,
  ``Hostname`` (or ``hostname``), ``pci_bus_id``, MIG (``GPU_I_ID``, ``GPU_I_PROFILE``) and
  Kubernetes pod labels. DCGM's "no value" sentinels (INT32/INT64/FP64 BLANK, NOT_FOUND,
  NOT_SUPPORTED, NOT_PERMISSIONED) and NaN become "not reported" (NULL), never 0.
- nvidia_gpu_exporter (``nvidia_smi_*``, keyed by ``uuid``; the index from ``nvidia_smi_index``).
- node_exporter's InfiniBand collector (``node_infiniband_*``, labels ``device`` and ``port``):
  host-side port counters, entity ``<node>/<device>``.

Each line is parsed by prometheus_client's maintained parser
(``prometheus_client.parser.text_string_to_metric_families``), one line at a time so that a bad
line becomes a dead letter with its line number instead of hiding the rest of the scrape.

Node: ``--node`` when given (in Kubernetes, dcgm-exporter's ``Hostname`` is often the exporter
pod's name), else the ``Hostname``/``hostname`` label; neither -> a one-line error.
Time: a sample's own timestamp when present, else ``--time``, else the file's modification time
(for ``fleetlog scrape``: the time of the scrape).

MIG: a GPU's row takes device-level series (no ``GPU_I_ID``) first; a signal reported only per
GPU instance is summed (framebuffer, counters) or maxed (gauges) over the instances.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from prometheus_client.parser import text_string_to_metric_families

from fleetlog.ingest import contract as c
from fleetlog.ingest.readers.base import (
    Collector,
    ReadOptions,
    ReadResult,
    SampleTable,
    file_time_us,
    small_int,
    us_of_epoch,
)
from fleetlog.ingest.readers.errors import MissingOption
from fleetlog.ingest.readers.inputs import read_input

FORMATS: Final = ("dcgm", "prometheus")
SOURCE: Final = "dcgm-exporter"

# DCGM "no value" sentinels (dcgm_structs.h): BLANK, NOT_FOUND, NOT_SUPPORTED, NOT_PERMISSIONED.
_INT32_BLANK: Final = 0x7FFFFFF0
_INT64_BLANK: Final = 0x7FFFFFFFFFFFFFF0
_FP64_BLANK: Final = 140737488355328.0
_BLANKS: Final = frozenset(
    [_INT32_BLANK + i for i in range(4)] + [_INT64_BLANK + i for i in range(4)]
    + [_FP64_BLANK + i for i in range(4)]
)

# DCGM field -> contract column (GPU_SIGNALS' sources), plus the renamed throttle field.
_DCGM: Final = {s.source: s.column for s in c.GPU_SIGNALS}
_DCGM["DCGM_FI_DEV_CLOCKS_EVENT_REASONS"] = "throttle_reasons"

# nvidia_gpu_exporter family -> (column, scale)
_NVSMI: Final = {
    "nvidia_smi_utilization_gpu_ratio": ("util_pct", 100.0),
    "nvidia_smi_clocks_current_sm_clock_hz": ("sm_clock_mhz", 1e-6),
    "nvidia_smi_temperature_gpu": ("gpu_temp_c", 1.0),
    "nvidia_smi_temperature_memory": ("mem_temp_c", 1.0),
    "nvidia_smi_power_draw_watts": ("power_w", 1.0),
    "nvidia_smi_memory_used_bytes": ("fb_used_mib", 1.0 / (1024 * 1024)),
    "nvidia_smi_ecc_errors_corrected_volatile_total": ("ecc_sbe_vol_total", 1.0),
    "nvidia_smi_ecc_errors_uncorrected_volatile_total": ("ecc_dbe_vol_total", 1.0),
    "nvidia_smi_ecc_errors_corrected_aggregate_sram": ("sram_ecc_total", 1.0),
    "nvidia_smi_remapped_rows_pending": ("row_remap_pending", 1.0),
    "nvidia_smi_remapped_rows_failure": ("row_remap_failure", 1.0),
    "nvidia_smi_clocks_event_reasons_active": ("throttle_reasons", 1.0),
    "nvidia_smi_clocks_throttle_reasons_active": ("throttle_reasons", 1.0),
}

# node_exporter InfiniBand family -> (column, scale). Data counters are octets there and
# 32-bit words in sysfs / perfquery (the contract's unit), hence / 4.
_NODE_IB: Final = {
    "node_infiniband_port_data_transmitted_bytes_total": ("xmit_data", 0.25),
    "node_infiniband_port_data_received_bytes_total": ("rcv_data", 0.25),
    "node_infiniband_symbol_error_total": ("symbol_error", 1.0),
    "node_infiniband_port_errors_received_total": ("rcv_errors", 1.0),
    "node_infiniband_link_downed_total": ("link_downed", 1.0),
    "node_infiniband_link_error_recovery_total": ("link_error_recovery", 1.0),
    "node_infiniband_port_discards_transmitted_total": ("xmit_discards", 1.0),
    "node_infiniband_state_id": ("link_state", 1.0),
}

_SUMMED: Final = frozenset(
    ["fb_used_mib"] + [s.column for s in c.GPU_SIGNALS if s.kind == "counter"]
)
_DEVICE_INDEX: Final = re.compile(r"^nvidia(\d+)$")
_SNIFF: Final = re.compile(
    r"^(?:# (?:HELP|TYPE) (?:DCGM_FI_|nvidia_smi_|node_infiniband_)\w* "
    r"|(?:DCGM_FI_|nvidia_smi_|node_infiniband_)\w*(?:\{[^}\n]*\})?[ \t]+\S+[ \t]*(?:\d+)?$)",
    re.M,
)


def sniff(head: str) -> bool:
    return bool(_SNIFF.search(head))


@dataclass
class _Sample:
    line: int
    raw: bytes
    name: str
    labels: dict[str, str]
    value: float
    time_us: int | None


def read(
    path: Path, opts: ReadOptions, data: bytes | None = None, *, fmt: str = "dcgm",
) -> ReadResult:
    """``data``: the input's bytes when the caller read them already (a pipe reads once)."""
    return parse(read_input(path) if data is None else data, origin=str(path), opts=opts,
                 default_time_us=file_time_us(path, opts), fmt=fmt)


def parse(
    data: bytes, *, origin: str, opts: ReadOptions, default_time_us: int, fmt: str = "dcgm",
) -> ReadResult:
    out = Collector(origin, fmt, SOURCE)
    samples = list(_samples(data, out))
    _gpus(samples, out, opts, default_time_us)
    _ports(samples, out, opts, default_time_us)
    for s in samples:
        if s.name == "nvidia_smi_index":
            out.take(s.line)  # it keys the nvidia_smi_* series of its uuid
        elif s.name not in _DCGM and s.name not in _NVSMI and s.name not in _NODE_IB:
            out.skip("series of families not in the contract", line=s.line)
    return out.done()


def _samples(data: bytes, out: Collector) -> list[_Sample]:
    samples: list[_Sample] = []
    for number, text, raw in out.lines(data):
        if text is None:
            out.dead("line is not UTF-8", offset=number, raw=raw)
            continue
        stripped = text.strip()
        if not stripped or stripped.startswith("#"):
            out.take(number)  # blank, # HELP, # TYPE, comments
            continue
        try:
            families = list(text_string_to_metric_families(stripped + "\n"))
        except Exception as exc:  # the parser raises several types on hostile text
            out.dead(f"not Prometheus text: {type(exc).__name__}: {exc}", offset=number, raw=raw)
            continue
        if not any(family.samples for family in families):
            out.dead("no sample on this line", offset=number, raw=raw)
            continue
        for family in families:
            for s in family.samples:
                ts = None
                if s.timestamp is not None:
                    try:
                        ts = us_of_epoch(float(s.timestamp))
                    except (TypeError, ValueError, OverflowError):
                        out.dead(f"sample timestamp {s.timestamp} is out of range",
                                 offset=number, raw=raw)
                        continue
                samples.append(_Sample(number, raw, s.name, dict(s.labels), s.value, ts))
    return samples


def _value(sample: _Sample, out: Collector) -> float | None:
    value = sample.value
    if isinstance(value, float) and math.isnan(value):
        return None
    if value in _BLANKS:
        out.skip("DCGM no-value sentinels (kept as not reported)")
        return None
    try:
        result = float(value)
    except OverflowError:
        result = math.inf
    if math.isinf(result):
        out.dead("value is infinite or beyond 64-bit floats", offset=sample.line,
                 raw=sample.raw)
        return None
    return result


def _node(labels: dict[str, str], opts: ReadOptions, what: str) -> str:
    if opts.node:
        return opts.node
    node = labels.get("Hostname") or labels.get("hostname")
    if not node:
        raise MissingOption(f"{what} has no Hostname label: pass --node NAME")
    return node


def _gpu_index(labels: dict[str, str]) -> int | None:
    text = labels.get("gpu")
    if text is None:
        match = _DEVICE_INDEX.match(labels.get("device", ""))
        text = match.group(1) if match else None
    return small_int(text, 255)


def _gpus(
    samples: list[_Sample], out: Collector, opts: ReadOptions, default_time_us: int,
) -> None:
    # (node, gpu, time) -> column -> (device-level values, instance-level values)
    cells: dict[tuple[str, int, int], dict[str, tuple[list[float], list[float]]]] = (
        defaultdict(lambda: defaultdict(lambda: ([], [])))
    )
    nodes: set[str] = set()
    uuid_index = {
        s.labels.get("uuid", ""): int(s.value) for s in samples
        if s.name == "nvidia_smi_index" and 0 <= s.value <= 255 and float(s.value).is_integer()
    }
    for s in samples:
        if s.name == "nvidia_smi_gpu_info":  # nvidia_gpu_exporter's inventory line
            host = opts.node or s.labels.get("Hostname") or s.labels.get("hostname")
            info_index = small_int(s.labels.get("index", ""), 255)
            if host and info_index is not None:
                out.register_gpu(host, info_index, s.labels.get("pci_bus_id"),
                                 uuid=s.labels.get("uuid", ""), model=s.labels.get("name", ""),
                                 time_us=s.time_us if s.time_us is not None else default_time_us)
        if s.name in _DCGM:
            column, scale = _DCGM[s.name], 1.0
            index = _gpu_index(s.labels)
            if index is None:
                out.dead(f"{s.name} has no GPU index (gpu label 0-255)", offset=s.line,
                         raw=s.raw)
                continue
        elif s.name in _NVSMI:
            column, scale = _NVSMI[s.name]
            found = uuid_index.get(s.labels.get("uuid", ""))
            if found is None:
                out.dead(f"{s.name}: no nvidia_smi_index for uuid {s.labels.get('uuid')!r}",
                         offset=s.line, raw=s.raw)
                continue
            index = found
        else:
            continue
        node = _node(s.labels, opts, f"{s.name} (line {s.line})")
        nodes.add(node)
        out.take(s.line)
        value = _value(s, out)
        when = s.time_us if s.time_us is not None else default_time_us
        out.register_gpu(node, index, s.labels.get("pci_bus_id"),
                         uuid=s.labels.get("UUID") or s.labels.get("uuid") or "",
                         model=s.labels.get("modelName") or s.labels.get("name") or "",
                         time_us=when)
        instance = bool(s.labels.get("GPU_I_ID"))
        cell = cells[(node, index, when)][column]
        if value is None:
            continue
        (cell[1] if instance else cell[0]).append(value * scale)
    if opts.node and len({s.labels.get("Hostname") or s.labels.get("hostname") for s in samples
                          if s.name in _DCGM} - {None, ""}) > 1:
        raise MissingOption(
            "this scrape holds several hosts (Hostname labels): drop --node so each GPU keeps "
            "its own host"
        )
    by_time: dict[int, SampleTable] = defaultdict(SampleTable)
    for (node, index, when), columns in cells.items():
        table = by_time[when]
        table.touch(node, index)
        for column, (device, instances) in columns.items():
            if device:
                if len(set(device)) > 1:
                    out.skip("duplicate series with differing values (first kept)")
                table.set(node, index, column, device[0])
            elif instances:
                total = sum(instances) if column in _SUMMED else max(instances)
                table.set(node, index, column, total)
    for when in sorted(by_time):
        out.emit_gpus(by_time[when], when)


def _ports(
    samples: list[_Sample], out: Collector, opts: ReadOptions, default_time_us: int,
) -> None:
    by_time: dict[int, SampleTable] = defaultdict(SampleTable)
    for s in samples:
        if s.name not in _NODE_IB:
            continue
        column, scale = _NODE_IB[s.name]
        device, port = s.labels.get("device", ""), small_int(s.labels.get("port"), 65535)
        if not device or port is None:
            out.dead(f"{s.name} needs device and port labels", offset=s.line, raw=s.raw)
            continue
        if not opts.node:
            raise MissingOption(
                "node_exporter InfiniBand series do not name their node: pass --node NAME"
            )
        out.take(s.line)
        value = _value(s, out)
        when = s.time_us if s.time_us is not None else default_time_us
        table = by_time[when]
        entity = f"{opts.node}/{device}"
        table.touch(entity, port)
        table.set(entity, port, column, None if value is None else value * scale)
    for when in sorted(by_time):
        out.emit_ports(by_time[when], when)
