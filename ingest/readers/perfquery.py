"""InfiniBand ``perfquery`` output -> ``port.sampled``.

Reads ``perfquery -x`` (extended counters) and plain ``perfquery`` sections
(``# Port counters: Lid 1719 port 1 ...``), old (``XmtData``) and new (``PortXmitData``) field
names, several sections per file (``perfquery -x -a`` per port, or a loop over switches). Sections
that are not port counters (``PortRcvErrorDetails``, ``PortXmitDiscardDetails``...) are counted,
not mapped; the all-ports sum (port 255) is skipped so it is never added to real ports.

Entity: perfquery does not name the device it queried, so ``--node`` names it: a switch
(``leaf-01``, e.g. from ``ibnetdiscover``) or a host HCA (``gpu-node-1/mlx5_0``).
Time: ``--time``, else the file's modification time.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

from fleetlog.ingest.readers.base import (
    Collector,
    ReadOptions,
    ReadResult,
    SampleTable,
    file_time_us,
    need_node,
    small_int,
)
from fleetlog.ingest.readers.inputs import read_input

FORMAT: Final = "perfquery"
SOURCE: Final = "perfquery"

_HEADER: Final = re.compile(r"^# (.*?counters):.*?\bport ([0-9]{1,9})", re.I)
_FIELD: Final = re.compile(r"^([A-Za-z0-9_]+):\.*(.*)$")
_FIELDS: Final = {
    "portxmitdata": "xmit_data", "xmtdata": "xmit_data",
    "portrcvdata": "rcv_data", "rcvdata": "rcv_data",
    "symbolerrorcounter": "symbol_error", "symbolerrors": "symbol_error",
    "portrcverrors": "rcv_errors", "rcverrors": "rcv_errors",
    "linkdownedcounter": "link_downed", "linkdowned": "link_downed",
    "linkerrorrecoverycounter": "link_error_recovery", "linkrecovers": "link_error_recovery",
    "portxmitdiscards": "xmit_discards", "xmtdiscards": "xmit_discards",
}
_STRUCTURE: Final = frozenset({"portselect", "counterselect", "counterselect2"})
_COUNTER_SECTIONS: Final = ("port counters", "port extended counters")
_ALL_PORTS: Final = 255


def sniff(head: str) -> bool:
    return bool(re.search(r"(?m)^# \w+(?: extended)? counters: Lid \d+ port \d+", head)) or bool(
        re.search(r"(?m)^PortXmitData:\.+", head))


def read(path: Path, opts: ReadOptions, data: bytes | None = None) -> ReadResult:
    """``data``: the input's bytes when the caller read them already (a pipe reads once)."""
    return parse(read_input(path) if data is None else data, origin=str(path), opts=opts,
                 default_time_us=file_time_us(path, opts))


def parse(data: bytes, *, origin: str, opts: ReadOptions, default_time_us: int) -> ReadResult:
    out = Collector(origin, FORMAT, SOURCE)
    entity = need_node(opts, "perfquery output (name the switch or <node>/<hca>)")
    table = SampleTable()
    port: int | None = None
    section_ok = False
    for number, text, raw in out.lines(data):
        if text is None:
            out.dead("line is not UTF-8", offset=number, raw=raw)
            continue
        line = text.strip()
        if not line:
            out.take(number)
            continue
        header = _HEADER.match(line)
        if header:
            kind = header.group(1).strip().lower()
            port = int(header.group(2))
            section_ok = kind in _COUNTER_SECTIONS and port != _ALL_PORTS and port <= 65535
            if not section_ok:
                out.skip("sections that are not per-port counters" if port != _ALL_PORTS
                         else "all-ports sums (port 255)", line=number)
            else:
                out.take(number)
            continue
        if line.startswith("#"):
            out.dead("perfquery section header not understood", offset=number, raw=raw)
            port, section_ok = None, False
            continue
        field = _FIELD.match(line)
        if field is None:
            out.dead("not a perfquery 'Name:....value' line", offset=number, raw=raw)
            continue
        name, value = field.group(1).lower(), field.group(2).strip()
        selected = small_int(value, 65535) if name == "portselect" and port is None else None
        if selected is not None:
            port, section_ok = selected, selected != _ALL_PORTS
            if not section_ok:
                out.skip("all-ports sums (port 255)", line=number)
                continue
        if port is None:
            out.dead("counter line outside a port section (no '# Port counters: ... port N' "
                     "header or PortSelect before it)", offset=number, raw=raw)
            continue
        if not section_ok:
            out.skipped_line(number)  # its section is counted under skipped
            continue
        table.touch(entity, port)
        column = _FIELDS.get(name)
        if column is None:
            if name in _STRUCTURE:
                out.take(number)
            else:
                out.skip("perfquery counters not in the contract", line=number)
            continue
        try:
            table.set(entity, port, column, _counter(value))
            out.take(number)
        except ValueError:
            out.dead(f"{field.group(1)} value {value!r} is not a number", offset=number, raw=raw)
    out.emit_ports(table, default_time_us)
    return out.done()


def _counter(text: str) -> float:
    """A perfquery counter (decimal, or 0x hex); ValueError when it is neither."""
    if len(text) > 40:
        raise ValueError(f"{text[:20]!r}... is too long for a counter")
    return float(int(text, 16) if text.lower().startswith("0x") else int(text, 10))
