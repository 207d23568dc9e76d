"""``nvidia-smi --query-gpu=... --format=csv`` -> ``gpu.sampled``.

Accepts ``csv``, ``csv,nounits`` and ``csv,noheader`` (then the field list comes from
``--fields``, the same list given to ``--query-gpu``). Headers with units (``memory.used [MiB]``)
and values with units (``19818 MiB``) are both read. ``[N/A]``, ``[Not Supported]`` and similar
become "not reported" (NULL), never 0. A looping capture (``-l 10``) becomes one event per scrape:
a scrape ends when a GPU index repeats.

Time: the ``timestamp`` field is the collecting machine's local time without a zone, so
``--tz`` is required when it is present; without the field, ``--time`` or the file's mtime.
Node: ``--node``, else the ``hostname`` field (recent drivers), else a one-line error.
"""

from __future__ import annotations

import csv
import re
from datetime import datetime
from pathlib import Path
from typing import Final

from fleetlog.ingest.readers.base import (
    Collector,
    ReadOptions,
    ReadResult,
    SampleTable,
    file_time_us,
    is_na,
    local_us,
    need_tz,
    number,
    small_int,
)
from fleetlog.ingest.readers.errors import MissingOption, ReaderError
from fleetlog.ingest.readers.inputs import read_input

FORMAT: Final = "nvidia-smi-csv"
SOURCE: Final = "nvidia-smi"

# query field -> contract column; the first field present wins.
_FIELDS: Final = {
    "util_pct": ("utilization.gpu",),
    "sm_clock_mhz": ("clocks.current.sm", "clocks.sm"),
    "gpu_temp_c": ("temperature.gpu",),
    "mem_temp_c": ("temperature.memory",),
    "power_w": ("power.draw", "power.draw.instant", "power.draw.average"),
    "fb_used_mib": ("memory.used",),
    "ecc_sbe_vol_total": ("ecc.errors.corrected.volatile.total",),
    "ecc_dbe_vol_total": ("ecc.errors.uncorrected.volatile.total",),
    "sram_ecc_total": ("ecc.errors.corrected.aggregate.sram",),
    "row_remap_pending": ("remapped_rows.pending",),
    "row_remap_failure": ("remapped_rows.failure",),
    "throttle_reasons": ("clocks_event_reasons.active", "clocks_throttle_reasons.active",
                         "clocks_throttle_reasons.active"),
}
_KNOWN: Final = frozenset({f for names in _FIELDS.values() for f in names}
                          | {"timestamp", "index", "uuid", "pci.bus_id", "name", "hostname"})
_HEADER_FIELD: Final = re.compile(r"^[A-Za-z_][\w.]*(?: \[[^\]]*\])?$")
_TIME_FORMATS: Final = ("%Y/%m/%d %H:%M:%S.%f", "%Y/%m/%d %H:%M:%S")


def _name(field: str) -> str:
    return field.split(" [", 1)[0].strip().lower()


def _is_header(cells: list[str]) -> bool:
    names = [c.strip() for c in cells]
    return all(_HEADER_FIELD.match(n) for n in names) and any(_name(n) in _KNOWN for n in names)


def sniff(head: str) -> bool:
    first = next((line for line in head.splitlines() if line.strip()), "")
    cells = next(csv.reader([first], skipinitialspace=True), [])
    names = {_name(c) for c in cells}
    return len(cells) >= 2 and _is_header(cells) and "index" in names


def read(path: Path, opts: ReadOptions, data: bytes | None = None) -> ReadResult:
    """``data``: the input's bytes when the caller read them already (a pipe reads once)."""
    return parse(read_input(path) if data is None else data, origin=str(path), opts=opts,
                 default_time_us=file_time_us(path, opts))


def parse_time(text: str, opts: ReadOptions, out: Collector) -> int | str:
    """UTC microseconds of an nvidia-smi timestamp, or the reason it cannot be read."""
    value = text.strip()
    for fmt in _TIME_FORMATS:
        try:
            naive = datetime.strptime(value, fmt)  # noqa: DTZ007 - localized just below
        except ValueError:
            continue
        return local_us(naive, need_tz(opts, "nvidia-smi timestamps"), out)
    return f"timestamp {value!r} is not YYYY/MM/DD HH:MM:SS.mmm"


def parse(data: bytes, *, origin: str, opts: ReadOptions, default_time_us: int) -> ReadResult:
    out = Collector(origin, FORMAT, SOURCE)
    header: list[str] | None = [f.strip().lower() for f in opts.fields] if opts.fields else None
    table = SampleTable()
    scrape_time: int | None = None
    seen: set[tuple[str, int]] = set()

    def flush() -> None:
        nonlocal table, scrape_time, seen
        if scrape_time is not None:
            out.emit_gpus(table, scrape_time)
        table, scrape_time, seen = SampleTable(), None, set()

    for number_, text, raw in out.lines(data):
        if text is None:
            out.dead("line is not UTF-8", offset=number_, raw=raw)
            continue
        if not text.strip():
            out.take(number_)
            continue
        try:
            cells = next(csv.reader([text], skipinitialspace=True))
        except (csv.Error, StopIteration) as exc:
            out.dead(f"not CSV: {exc}", offset=number_, raw=raw)
            continue
        if _is_header(cells):
            names = [_name(c) for c in cells]
            if header is not None and names != header and opts.fields is None:
                flush()  # a new query with other fields starts here
            header = names
            out.take(number_)
            continue
        if header is None:
            raise MissingOption(
                f"{origin} has no header line (csv,noheader): pass --fields with the "
                "--query-gpu list it was collected with"
            )
        if len(cells) != len(header):
            out.dead(f"{len(cells)} fields where the header has {len(header)}",
                     offset=number_, raw=raw)
            continue
        row = dict(zip(header, (c.strip() for c in cells), strict=True))
        index_text = row.get("index")
        if index_text is None:
            raise ReaderError(
                f"{origin}: the query has no index field: add index to --query-gpu"
            )
        index = small_int(index_text, 255)
        if index is None:
            out.dead(f"index {index_text!r} is not a GPU index 0-255", offset=number_, raw=raw)
            continue
        when = default_time_us
        if "timestamp" in row:
            parsed = parse_time(row["timestamp"], opts, out)
            if isinstance(parsed, str):
                out.dead(parsed, offset=number_, raw=raw)
                continue
            when = parsed
        node = opts.node or ("" if is_na(row.get("hostname", "")) else row.get("hostname", ""))
        if not node:
            raise MissingOption(
                f"{origin} does not name its node (no hostname field): pass --node NAME"
            )
        if (node, index) in seen:
            flush()
        seen.add((node, index))
        scrape_time = when if scrape_time is None else min(scrape_time, when)
        table.touch(node, index)
        out.register_gpu(node, index, row.get("pci.bus_id"), uuid=row.get("uuid", ""),
                         model=row.get("name", ""), time_us=when)
        out.take(number_)
        for column, fields in _FIELDS.items():
            field = next((f for f in fields if f in row), None)
            if field is None:
                continue
            try:
                table.set(node, index, column, number(row[field]))
            except ValueError:
                out.dead(f"{field} value {row[field]!r} is not a number", offset=number_,
                         raw=raw)
    flush()
    return out.done()
