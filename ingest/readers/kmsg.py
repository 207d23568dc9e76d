"""Kernel logs -> ``xid.reported``: every ``NVRM: Xid (PCI:...): N, ...`` line, with its time.

Record formats, recognised per line (so a concatenation of logs also works), and what their
time needs:

- ``dmesg``: ``[ 1234.567890] NVRM: Xid ...`` -> ``--boot-time``
- ``dmesg -T`` / ``--ctime``: ``[Sun Feb 23 16:24:18 2025] NVRM: ...`` -> ``--tz``
- ``dmesg --time-format iso``: ``2025-01-21T04:41:44,283302+00:00 NVRM: ...`` -> nothing
- ``dmesg -x`` (decode): ``kern  :warn  : `` before any of the dmesg forms -> as that form
- ``journalctl -k -o short-iso[-precise]``: ``2025-02-23T16:24:18+0000 host kernel: ...``
- ``journalctl -o short`` and syslog files: ``Feb 23 16:24:18 host kernel: ...`` -> ``--tz``
  and ``--year``
- ``journalctl -o short-monotonic``: ``[ 1234.567890] host kernel: ...`` -> ``--boot-time``
- ``journalctl -k -o json``: ``{"MESSAGE": ..., "__REALTIME_TIMESTAMP": ..., "_HOSTNAME": ...}``
- ``/dev/kmsg``: ``4,1234,5678901234,-;NVRM: Xid ...`` -> ``--boot-time``

Multi-line messages: indented continuation lines (dmesg, journalctl) and ``/dev/kmsg``
dictionary lines (`` DEVICE=+pci:0000:9b:00.0``) belong to the record above them; ``/dev/kmsg``'s
``\\x0a`` escapes are decoded. XID variants: with or without ``PCI:``, with a MIG ``GPU-I:n``,
``pid=N`` / ``pid='<unknown>'`` / no pid, ``name=...`` or not. NVSwitch ``SXid`` lines are not
GPU XIDs and are not reported as such. The PCI address is stored in Linux form
(``0000:9b:00.0``); the GPU index is left empty (a kernel line does not carry it).

Node: ``--node``, else the host named by the journal line; neither -> a one-line error.
Lines that are not kernel log records (no recognised prefix) go to dead letters.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Final

from fleetlog.ingest import contract as c
from fleetlog.ingest.readers.base import (
    Collector,
    ReadOptions,
    ReadResult,
    aware_us,
    boot_plus,
    check_us,
    local_us,
    need_tz,
)
from fleetlog.ingest.readers.errors import MissingOption
from fleetlog.ingest.readers.inputs import read_input

FORMAT: Final = "kmsg"
SOURCE: Final = "kernel"

_DECODE: Final = re.compile(r"^(?:kern|user|mail|daemon|auth|syslog|lpr|news|uucp|cron|authpriv|"
                            r"ftp|local[0-7])\s*:\s*[a-z]+\s*: (.*)$")
_KMSG: Final = re.compile(r"^(\d{1,20}),(\d{1,20}),(\d{1,20}),[^;]*;(.*)$")
_KMSG_DICT: Final = re.compile(r"^ ([A-Z_]+)=(.*)$")
_ISO: Final = re.compile(
    r"^(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)) ?(.*)$")
_CTIME: Final = re.compile(
    r"^\[([A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]?\d \d\d:\d\d:\d\d \d{4})\] ?(.*)$")
_MONO: Final = re.compile(r"^\[\s*(\d{1,12}\.\d{1,9})\] ?(.*)$")
_SYSLOG: Final = re.compile(
    r"^([A-Z][a-z]{2} [ \d]?\d \d\d:\d\d:\d\d(?:\.\d+)?) (\S+) ([^:\s]+(?:\[\d+\])?): ?(.*)$")
_HOST_KERNEL: Final = re.compile(r"^(\S+) kernel: ?(.*)$")

_XID_WORD: Final = re.compile(r"(?<![A-Za-z])Xid\b")
_XID: Final = re.compile(
    r"(?<![A-Za-z])Xid\s*\(([^)]{0,200})\)\s*:\s*([0-9]{1,9})\s*(?:,\s*(.*))?$", re.S)
_PCI: Final = re.compile(
    r"(?:PCI:)?(?:([0-9a-fA-F]{4,8}):)?([0-9a-fA-F]{2}):([0-9a-fA-F]{2})(?:\.([0-7]))?")
_PID: Final = re.compile(r"^pid=(?:'?<unknown>'?|([0-9]{1,18}))\s*,?\s*")
_KMSG_ESCAPE: Final = re.compile(r"\\x([0-9a-fA-F]{2})")
_PREFIXES: Final = (_KMSG, _ISO, _CTIME, _MONO, _SYSLOG)
_MAX_MESSAGE: Final = 2000  # characters of an XID message kept (longer ones are cut, counted)


def sniff(head: str) -> bool:
    """Most of the first lines carry a kernel log prefix (or journal JSON fields)."""
    if head.lstrip().startswith("{"):
        return '"MESSAGE"' in head and "__REALTIME_TIMESTAMP" in head
    lines = [line for line in head.splitlines() if line.strip()][:20]
    hits = 0
    for line in lines:
        decoded = _DECODE.match(line)
        body = decoded.group(1) if decoded else line
        hits += any(p.match(body) for p in _PREFIXES)
    return bool(lines) and hits * 2 >= len(lines)


@dataclass
class _Record:
    line: int
    raw: bytes
    message: str
    host: str | None
    time_us: int | None  # None: unreadable; reason in .error
    error: str | None = None
    extra: list[str] = field(default_factory=list)
    device: str | None = None


def read(path: Path, opts: ReadOptions, data: bytes | None = None) -> ReadResult:
    """``data``: the input's bytes when the caller read them already (a pipe reads once)."""
    return parse(read_input(path) if data is None else data, origin=str(path), opts=opts)


def parse(data: bytes, *, origin: str, opts: ReadOptions) -> ReadResult:
    out = Collector(origin, FORMAT, SOURCE)
    for record in _records(data, opts, out):
        _emit(record, opts, out)
    return out.done()


def _records(data: bytes, opts: ReadOptions, out: Collector) -> Iterator[_Record]:
    current: _Record | None = None
    kmsg = False
    for number, text, raw in out.lines(data):
        if text is None:
            out.dead("line is not UTF-8", offset=number, raw=raw)
            continue
        if not text.strip():
            out.take(number)
            continue
        if current is not None:
            match = _KMSG_DICT.match(text) if kmsg else None
            if match:
                if match.group(1) == "DEVICE":
                    current.device = match.group(2)
                out.take(number)  # part of the record above
                continue
            if text[:1] in (" ", "\t") and not _MONO.match(text):
                current.extra.append(text.strip())
                out.take(number)  # part of the record above
                continue
        if current is not None:
            yield current
        record, kmsg = _record(number, text, raw, opts, out)
        current = record if isinstance(record, _Record) else None
        if isinstance(record, str):
            out.dead(record, offset=number, raw=raw)
    if current is not None:
        yield current


_NOT_A_RECORD: Final = ("not a kernel log record (no timestamp prefix: collect with "
                        "`dmesg --time-format iso` or `journalctl -k -o short-iso`)")


def _record(
    number: int, text: str, raw: bytes, opts: ReadOptions, out: Collector,
) -> tuple[_Record | str, bool]:
    """The record a line starts (and whether it is /dev/kmsg), or why it is none."""
    if text.startswith("{"):
        return _journal_json(number, text, raw), False
    decoded = _DECODE.match(text)
    body = decoded.group(1) if decoded else text
    match = _KMSG.match(body)
    if match:
        message = _KMSG_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), match.group(4))
        if not _wants_time(message):
            return _Record(number, raw, message, None, 0), True
        try:
            when = boot_plus(opts, int(match.group(3)) / 1e6, "/dev/kmsg records")
        except ValueError as exc:
            return _Record(number, raw, message, None, None, str(exc)), True
        return _timed(number, raw, message, None, aware_us(when)), True
    match = _ISO.match(body)
    if match:
        stamp = match.group(1).replace(",", ".").replace(" ", "T", 1)
        host, message = _split_host(match.group(2))
        try:
            when_dt = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError:
            return _Record(number, raw, message, host, None, f"bad time {match.group(1)!r}"), False
        return _timed(number, raw, message, host, aware_us(when_dt)), False
    match = _CTIME.match(body)
    if match:
        message = match.group(2)
        if not _wants_time(message):
            return _Record(number, raw, message, None, 0), False
        return _local(number, raw, message, None, match.group(1), "%a %b %d %H:%M:%S %Y",
                      opts, out, "dmesg -T times"), False
    match = _MONO.match(body)
    if match:
        host, message = _split_host(match.group(2))
        if not _wants_time(message):
            return _Record(number, raw, message, host, 0), False
        try:
            when = boot_plus(opts, float(match.group(1)), "dmesg times")
        except ValueError as exc:
            return _Record(number, raw, message, host, None, str(exc)), False
        return _timed(number, raw, message, host, aware_us(when)), False
    match = _SYSLOG.match(body)
    if match:
        stamp, host, ident, message = match.groups()
        if ident != "kernel":
            return _Record(number, raw, "", host, 0), False
        if not _wants_time(message):
            return _Record(number, raw, message, host, 0), False
        if opts.year is None:
            raise MissingOption(
                "syslog times have no year (e.g. 'Feb 23 16:24:18'): pass --year and --tz, or "
                "collect with `journalctl -k -o short-iso`"
            )
        fmt = "%Y %b %d %H:%M:%S.%f" if "." in stamp else "%Y %b %d %H:%M:%S"
        return _local(number, raw, message, host, f"{opts.year} {' '.join(stamp.split())}",
                      fmt, opts, out, "syslog times"), False
    return _NOT_A_RECORD, False


def _wants_time(message: str) -> bool:
    """Only XID candidates need a time (so a log without XIDs imports without options)."""
    return bool(_XID_WORD.search(message))


def _split_host(rest: str) -> tuple[str | None, str]:
    match = _HOST_KERNEL.match(rest)
    return (match.group(1), match.group(2)) if match else (None, rest)


def _local(
    number: int, raw: bytes, message: str, host: str | None, stamp: str, fmt: str,
    opts: ReadOptions, out: Collector, what: str,
) -> _Record:
    try:
        naive = datetime.strptime(" ".join(stamp.split()), fmt)  # noqa: DTZ007 - localized
    except ValueError:
        return _Record(number, raw, message, host, None, f"bad time {stamp!r}")
    return _timed(number, raw, message, host, local_us(naive, need_tz(opts, what), out))


def _timed(number: int, raw: bytes, message: str, host: str | None, when: int | str) -> _Record:
    if isinstance(when, str):
        return _Record(number, raw, message, host, None, when)
    return _Record(number, raw, message, host, when)


def _journal_json(number: int, text: str, raw: bytes) -> _Record | str:
    try:
        entry = json.loads(text)
    except (ValueError, RecursionError) as exc:
        return f"not a journal JSON entry: {type(exc).__name__}"
    if not isinstance(entry, dict):
        return "not a journal JSON entry (not an object)"
    message = entry.get("MESSAGE")
    if isinstance(message, list):  # journald exports non-UTF-8 messages as byte arrays
        try:
            message = bytes(int(b) & 0xFF for b in message).decode("utf-8", "replace")
        except (TypeError, ValueError, OverflowError):
            message = None
    host = entry.get("_HOSTNAME")
    stamp = entry.get("__REALTIME_TIMESTAMP")
    if not isinstance(message, str):
        return "journal entry has no MESSAGE text"
    try:
        when = check_us(int(str(stamp)))
    except ValueError:
        return _Record(number, raw, message, None, None,
                       "journal entry has no __REALTIME_TIMESTAMP")
    return _Record(number, raw, message, host if isinstance(host, str) else None, when)


def _emit(record: _Record, opts: ReadOptions, out: Collector) -> None:
    message = "\n".join([record.message, *record.extra]) if record.extra else record.message
    if not _XID_WORD.search(message):
        out.skip("kernel lines without an XID", line=record.line)
        return
    if record.time_us is None:
        out.dead(f"XID line with an unreadable time: {record.error}", offset=record.line,
                 raw=record.raw)
        return
    match = _XID.search(message)
    if match is None:
        out.dead("XID line not understood (expected 'Xid (PCI:dddd:bb:dd): N, ...')",
                 offset=record.line, raw=record.raw)
        return
    inside, code, rest = match.group(1), match.group(2), (match.group(3) or "").strip()
    xid = int(code)
    node = opts.node or record.host
    if not node:
        raise MissingOption(
            "kernel log lines do not name their node (dmesg, /dev/kmsg): pass --node NAME"
        )
    pid: int | None = None
    pid_match = _PID.match(rest)
    if pid_match and pid_match.group(1):
        pid = int(pid_match.group(1))
    pci = _pci(inside) or _pci((record.device or "").removeprefix("+pci:"))
    if len(rest) > _MAX_MESSAGE:
        out.skip(f"XID messages cut to their first {_MAX_MESSAGE:,} characters")
    payload = c.XidReported(node=node, gpu=None, pci_bus_id=pci, xid=xid,
                            message=rest[:_MAX_MESSAGE], pid=pid)
    out.event(payload, record.time_us)
    out.take(record.line)


def _pci(text: str) -> str | None:
    match = _PCI.search(text)
    if match is None:
        return None
    domain, bus, device, function = match.groups()
    domain = (domain or "0000")[-4:].rjust(4, "0")
    return f"{domain}:{bus}:{device}.{function or 0}".lower()

