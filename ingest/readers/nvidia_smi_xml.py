"""``nvidia-smi -q -x`` (XML) -> ``gpu.sampled``, across driver versions.

Several documents in one file (``nvidia-smi -q -x -l 10 >> file``) are read one by one (split
at each ``<?xml`` declaration, in one pass). The GPU index is the ``<gpu>`` element's position in
its document (nvidia-smi lists GPUs in index order; telegraf does the same), so do not restrict
the capture with ``-i``. A GPU index is 0-255: ``<gpu>`` elements beyond the 256th of a document
are counted under ``skipped``, not read. A document larger than ``inputs.MAX_DOCUMENT`` is a dead
letter.

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

from fleetlog.ingest.readers import inputs
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
# Bounded, so a '<?xml' without its '?>' costs a bounded look-ahead (not a scan to the end).
_DECL: Final = re.compile(rb"<\?xml[^>]{0,1000}\?>")
_BOM: Final = b"\xef\xbb\xbf"
_MAX_GPUS: Final = 256  # GPU indexes 0-255 (the contract stores a GPU index as a uint8)


def sniff(head: str) -> bool:
    return "<nvidia_smi_log" in head


def read(path: Path, opts: ReadOptions, data: bytes | None = None) -> ReadResult:
    """``data``: the input's bytes when the caller read them already (a pipe reads once)."""
    return parse(inputs.read_input(path) if data is None else data, origin=str(path), opts=opts)


def _documents(data: bytes) -> list[tuple[int, int, bytes]]:
    """(first line, last line, bytes) of each XML document in a concatenation of documents.

    One pass: line numbers are counted from one document start to the next (linear, where
    counting from the start of the input for each document was quadratic).
    """
    starts = [m.start() for m in _DECL.finditer(data)] or [0]
    if starts[0] != 0:
        starts.insert(0, 0)  # text before the first declaration: blank, or a dead letter
    docs = []
    line = 1
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else len(data)
        newlines = data.count(b"\n", start, end)
        last = line + newlines - (data[end - 1:end] == b"\n")
        docs.append((line, max(line, last), data[start:end]))
        line += newlines
    return docs


def parse(data: bytes, *, origin: str, opts: ReadOptions) -> ReadResult:
    out = Collector(origin, FORMAT, SOURCE)
    data = data.removeprefix(_BOM)
    out.begin_lines(data.count(b"\n") + (not data.endswith(b"\n")) if data else 0)
    for line, last, doc in _documents(data):
        # Every line of a document shares its outcome: taken, skipped or dead.
        out.mark_range(line, last, _document(line, doc, opts, out) if doc.strip() else "taken")
    return out.done()


def _document(line: int, doc: bytes, opts: ReadOptions, out: Collector) -> str:
    """Read one document: "taken", or "dead" / "skipped" when it was refused or counted."""
    if len(doc) > inputs.MAX_DOCUMENT:
        out.dead(f"document is larger than {inputs.size_text(inputs.MAX_DOCUMENT)} "
                 f"({len(doc):,} bytes), the limit of one document: not read", offset=line,
                 raw=doc)
        return "dead"
    try:
        root = ET.fromstring(doc)
    except ET.ParseError as exc:
        out.dead(f"not well-formed XML: {exc}", offset=line, raw=doc)
        return "dead"
    except Exception as exc:  # expat limits (entity expansion) and friends
        out.dead(f"XML rejected: {type(exc).__name__}: {exc}", offset=line, raw=doc)
        return "dead"
    if root.tag != "nvidia_smi_log":
        out.dead(f"root element is <{root.tag}>, not <nvidia_smi_log>", offset=line,
                 raw=doc)
        return "dead"
    when = _time(root.findtext("timestamp"), opts, out)
    if isinstance(when, str):
        out.dead(when, offset=line, raw=doc)
        return "dead"
    gpus = root.findall("gpu")
    if not gpus:
        out.skip("documents without <gpu> elements")
        return "skipped"
    node = need_node(opts, "nvidia-smi -q -x output")
    table = SampleTable()
    attached = root.findtext("attached_gpus")
    declared = small_int(attached, 10**6)
    if declared is not None and declared != len(gpus):
        out.note(f"document at line {line} says attached_gpus={declared} but lists "
                 f"{len(gpus)} <gpu> elements; the listed ones were read")
    if len(gpus) > _MAX_GPUS:
        out.skip(f"<gpu> elements beyond the {_MAX_GPUS}th of a document (GPU index 0-255)",
                 len(gpus) - _MAX_GPUS)
        out.note(f"document at line {line} lists {len(gpus)} <gpu> elements: the first "
                 f"{_MAX_GPUS} were read (GPU index 0-255)")
    for index, gpu in enumerate(gpus[:_MAX_GPUS]):
        table.touch(node, index)
        out.register_gpu(node, index, gpu.findtext("pci/pci_bus_id") or gpu.get("id"),
                         uuid=(gpu.findtext("uuid") or "").strip(),
                         model=(gpu.findtext("product_name") or "").strip(), time_us=when)
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
    return "taken"


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
