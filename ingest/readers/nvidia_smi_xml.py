"""``nvidia-smi -q -x`` (XML) -> ``gpu.sampled``, across driver versions.

Several documents in one file (``nvidia-smi -q -x -l 10 >> file``) are read one by one. The GPU
index is the ``<gpu>`` element's position in its document (nvidia-smi lists GPUs in index order;
telegraf does the same), so do not restrict the capture with ``-i``.

Driver differences handled: ``gpu_power_readings`` (R535+) vs ``power_readings``;
``power_draw`` vs ``instant_power_draw`` / ``average_power_draw``; ``clocks_event_reasons``
(R535+) vs ``clocks_throttle_reasons``; ECC as ``volatile/{dram,sram}_{correctable,uncorrectable}``
(v12 schema) vs ``volatile/{single,double}_bit/total`` (older). ``N/A`` is "not reported".

Time: ``<timestamp>`` is local time without a zone (``Fri Aug  4 11:44:30 2023``): ``--tz`` is
required. Node: ``--node`` (the XML does not name its host).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path
from typing import Final

from fleetlog.ingest.readers.base import (
    Collector,
    ReadOptions,
    ReadResult,
    SampleTable,
    local_us,
    need_node,
    need_tz,
    number,
    small_int,
)

FORMAT: Final = "nvidia-smi-xml"
SOURCE: Final = "nvidia-smi"

_SIMPLE: Final = {
    "util_pct": ("utilization/gpu_util",),
    "sm_clock_mhz": ("clocks/sm_clock",),
    "gpu_temp_c": ("temperature/gpu_temp",),
    "mem_temp_c": ("temperature/memory_temp",),
    "power_w": (
        "gpu_power_readings/power_draw", "gpu_power_readings/instant_power_draw",
        "gpu_power_readings/average_power_draw", "power_readings/power_draw",
        "power_readings/instant_power_draw", "power_readings/average_power_draw",
    ),
    "fb_used_mib": ("fb_memory_usage/used",),
    "sram_ecc_total": ("ecc_errors/aggregate/sram_correctable",),
    "row_remap_pending": ("remapped_rows/remapped_row_pending",),
    "row_remap_failure": ("remapped_rows/remapped_row_failure",),
    "pcie_replays": ("pci/replay_counter",),
}
_SUMS: Final = {
    "ecc_sbe_vol_total": (("ecc_errors/volatile/dram_correctable",
                           "ecc_errors/volatile/sram_correctable"),
                          ("ecc_errors/volatile/single_bit/total",)),
    "ecc_dbe_vol_total": (("ecc_errors/volatile/dram_uncorrectable",
                           "ecc_errors/volatile/sram_uncorrectable"),
                          ("ecc_errors/volatile/double_bit/total",)),
}
# Clock event / throttle reason element suffix -> bit (NVML's nvmlClocksEventReason*).
_REASON_BITS: Final = {
    "gpu_idle": 0x1, "applications_clocks_setting": 0x2, "sw_power_cap": 0x4,
    "hw_slowdown": 0x8, "sync_boost": 0x10, "sw_thermal_slowdown": 0x20,
    "hw_thermal_slowdown": 0x40, "hw_power_brake_slowdown": 0x80,
    "display_clocks_setting": 0x100,
}
_DECL: Final = re.compile(rb"<\?xml[^>]*\?>")


def sniff(head: str) -> bool:
    return "<nvidia_smi_log" in head


def read(path: Path, opts: ReadOptions) -> ReadResult:
    return parse(path.read_bytes(), origin=str(path), opts=opts)


def _documents(data: bytes) -> list[tuple[int, bytes]]:
    """(first line, bytes) of each XML document in a concatenation of documents."""
    starts = [m.start() for m in _DECL.finditer(data)] or [0]
    if starts[0] != 0 and data[: starts[0]].strip():
        starts.insert(0, 0)
    docs = []
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else len(data)
        chunk = data[start:end]
        if chunk.strip():
            docs.append((data.count(b"\n", 0, start) + 1, chunk))
    return docs


def parse(data: bytes, *, origin: str, opts: ReadOptions) -> ReadResult:
    out = Collector(origin, FORMAT, SOURCE)
    for line, doc in _documents(data):
        try:
            root = ET.fromstring(doc)
        except ET.ParseError as exc:
            out.dead(f"not well-formed XML: {exc}", offset=line, raw=doc)
            continue
        except Exception as exc:  # expat limits (entity expansion) and friends
            out.dead(f"XML rejected: {type(exc).__name__}: {exc}", offset=line, raw=doc)
            continue
        if root.tag != "nvidia_smi_log":
            out.dead(f"root element is <{root.tag}>, not <nvidia_smi_log>", offset=line,
                     raw=doc)
            continue
        when = _time(root.findtext("timestamp"), opts, out)
        if isinstance(when, str):
            out.dead(when, offset=line, raw=doc)
            continue
        gpus = root.findall("gpu")
        if not gpus:
            out.skip("documents without <gpu> elements")
            continue
        node = need_node(opts, "nvidia-smi -q -x output")
        table = SampleTable()
        attached = root.findtext("attached_gpus")
        declared = small_int(attached, 10**6)
        if declared is not None and declared != len(gpus):
            out.note(f"document at line {line} says attached_gpus={declared} but lists "
                     f"{len(gpus)} <gpu> elements; the listed ones were read")
        for index, gpu in enumerate(gpus[:256]):
            table.touch(node, index)
            for column, paths in _SIMPLE.items():
                _set(table, node, index, column, gpu, paths, out, line)
            for column, (parts, fallback) in _SUMS.items():
                values = [_num(gpu, p, out, line) for p in parts]
                present = [v for v in values if v is not None]
                if present:
                    table.set(node, index, column, sum(present))
                else:
                    _set(table, node, index, column, gpu, fallback, out, line)
            table.set(node, index, "throttle_reasons", _reasons(gpu))
        out.emit_gpus(table, when)
    return out.result


def _time(text: str | None, opts: ReadOptions, out: Collector) -> int | str:
    if not text or not text.strip():
        return "document has no <timestamp>"
    value = " ".join(text.split())
    try:
        naive = datetime.strptime(value, "%a %b %d %H:%M:%S %Y")  # noqa: DTZ007 - localized
    except ValueError:
        return f"<timestamp> {value!r} is not like 'Fri Aug 4 11:44:30 2023'"
    return local_us(naive, need_tz(opts, "nvidia-smi -q -x timestamps"), out)


def _num(gpu: ET.Element, path: str, out: Collector, line: int) -> float | None:
    text = gpu.findtext(path)
    if text is None:
        return None
    try:
        return number(text)
    except ValueError:
        out.dead(f"<{path}> value {text.strip()!r} is not a number", offset=line,
                 raw=text.encode())
        return None


def _set(
    table: SampleTable, node: str, index: int, column: str, gpu: ET.Element,
    paths: tuple[str, ...], out: Collector, line: int,
) -> None:
    for path in paths:
        if gpu.find(path) is not None:
            table.set(node, index, column, _num(gpu, path, out, line))
            return


def _reasons(gpu: ET.Element) -> float | None:
    group = gpu.find("clocks_event_reasons")
    prefix = "clocks_event_reason_"
    if group is None:
        group, prefix = gpu.find("clocks_throttle_reasons"), "clocks_throttle_reason_"
    if group is None or len(group) == 0:
        return None
    mask, known = 0, False
    for child in group:
        bit = _REASON_BITS.get(child.tag.removeprefix(prefix))
        state = (child.text or "").strip().lower()
        if bit is None or state not in ("active", "not active"):
            continue
        known = True
        if state == "active":
            mask |= bit
    return float(mask) if known else None
