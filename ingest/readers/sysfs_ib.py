"""``/sys/class/infiniband`` port counters -> ``port.sampled`` (entity ``<node>/<hca>``).

Inputs, all giving the same rows:

- the folder itself (``/sys/class/infiniband``) or a copy of it;
- a tarball of it (``.tar``, ``.tar.gz``, ``.tgz``);
- a listing of ``path<TAB>value`` or ``path:value`` lines, e.g. from
  ``grep -r . /sys/class/infiniband/*/ports/*/counters /sys/class/infiniband/*/ports/*/state``;
- a ``ttar`` text archive (node_exporter's test fixtures).

Read per port: ``counters/{port_xmit_data, port_rcv_data, symbol_error, port_rcv_errors,
link_downed, link_error_recovery, port_xmit_discards}`` and ``state`` (``4: ACTIVE`` -> 4).
``N/A (no PMA)`` and missing files are "not reported" (NULL), never 0; ``hw_counters`` are not
mapped. Node: ``--node`` (sysfs does not name its host). Time: ``--time``, else the file's
modification time (a live folder: the time of reading).
"""

from __future__ import annotations

import re
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from fleetlog.ingest.readers.base import (
    Collector,
    ReadOptions,
    ReadResult,
    SampleTable,
    file_time_us,
    is_na,
    lines_of,
    need_node,
    small_int,
)

FORMAT: Final = "sysfs-ib"
SOURCE: Final = "sysfs-ib"

_PATH: Final = re.compile(
    r"(?:^|/)([^/]+)/ports/([0-9]{1,9})/(?:counters/([A-Za-z0-9_]+)|(state))$")
_COLUMNS: Final = {
    "port_xmit_data": "xmit_data", "port_rcv_data": "rcv_data", "symbol_error": "symbol_error",
    "port_rcv_errors": "rcv_errors", "link_downed": "link_downed",
    "link_error_recovery": "link_error_recovery", "port_xmit_discards": "xmit_discards",
}
_LISTING: Final = re.compile(r"^([^\t:]*/[^\t:]*)(?:\t|:)(.*)$")
_MAX_MEMBER: Final = 4096


def sniff(head: str) -> bool:
    if head.startswith(("Directory: ", "Path: ", "# ttar")):
        return "/ports/" in head
    return bool(re.search(r"(?m)^[^\t:]*/ports/\d+/(?:counters/\w+|state)(?:\t|:)", head))


def sniff_path(path: Path) -> bool:
    if path.is_dir():
        return any(path.glob("*/ports/*")) or any(path.glob("*/*/ports/*"))
    return path.suffix in (".tar", ".tgz") or path.name.endswith(".tar.gz")


def read(path: Path, opts: ReadOptions) -> ReadResult:
    out = Collector(str(path), FORMAT, SOURCE)
    node = need_node(opts, "sysfs InfiniBand counters")
    table = SampleTable()
    if path.is_dir():
        entries: Iterator[tuple[str, int | None, str | None, bytes]] = _folder(path)
    elif tarfile.is_tarfile(path):
        entries = _tarball(path, out)
    else:
        entries = _text(path.read_bytes(), out)
    for name, line, value, raw in entries:
        _apply(table, node, name, line, value, raw, out, str(path))
    out.emit_ports(table, file_time_us(path, opts))
    return out.result


def _apply(
    table: SampleTable, node: str, name: str, line: int | None, value: str | None, raw: bytes,
    out: Collector, origin: str,
) -> None:
    match = _PATH.search(name)
    if match is None:
        out.skip("sysfs files that are not port counters or state")
        return
    hca, port_text, counter, state = match.groups()
    port = int(port_text)
    if port > 65535:
        out.dead(f"port {port_text} is out of range", offset=line, raw=raw)
        return
    column = "link_state" if state else _COLUMNS.get(counter or "")
    entity = f"{node}/{hca}"
    where = origin if line is not None else f"{origin}:{name}"
    if column is None:
        out.skip("port counters not in the contract")
        table.touch(entity, port)
        return
    table.touch(entity, port)
    if value is None:
        out.dead("value is not UTF-8", offset=line, raw=raw, origin=where)
        return
    text = value.strip()
    if is_na(text):
        return
    if state:
        text = text.split(":", 1)[0]
    try:
        if len(text) > 40:
            raise ValueError("too long")
        table.set(entity, port, column, float(int(text, 10)))
    except ValueError:
        out.dead(f"{name}: {text[:40]!r} is not a number", offset=line, raw=raw, origin=where)


def _folder(root: Path) -> Iterator[tuple[str, int | None, str | None, bytes]]:
    # Explicit depths, not "**": /sys/class/infiniband/<hca> are symlinks, which "**" skips.
    patterns = ("*/ports/*/counters/*", "*/ports/*/state",
                "*/*/ports/*/counters/*", "*/*/ports/*/state")
    for path in sorted({p for pattern in patterns for p in root.glob(pattern)}):
        try:
            data = path.read_bytes()[:_MAX_MEMBER]
        except OSError:
            continue  # counters a driver refuses to read (EINVAL) are "not reported"
        yield str(path.relative_to(root)), None, _decode(data), data


def _tarball(path: Path, out: Collector) -> Iterator[tuple[str, int | None, str | None, bytes]]:
    try:
        with tarfile.open(path) as archive:
            for member in archive:
                if not member.isfile() or not _PATH.search(member.name):
                    continue
                handle = archive.extractfile(member)
                data = handle.read(_MAX_MEMBER) if handle else b""
                yield member.name, None, _decode(data), data
    except (tarfile.TarError, OSError, EOFError) as exc:
        out.dead(f"tarball unreadable: {type(exc).__name__}: {exc}", offset=None, raw=None)


def _decode(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _text(data: bytes, out: Collector) -> Iterator[tuple[str, int | None, str | None, bytes]]:
    lines = list(lines_of(data))
    if lines and lines[0][1] is not None and lines[0][1].startswith(("Directory: ", "Path: ",
                                                                     "# ttar")):
        yield from _ttar(lines, out)
        return
    for number, text, raw in lines:
        if text is None:
            out.dead("line is not UTF-8", offset=number, raw=raw)
            continue
        if not text.strip() or text.startswith("#"):
            continue
        match = _LISTING.match(text)
        if match is None:
            out.dead("not a 'path<TAB>value' or 'path:value' line", offset=number, raw=raw)
            continue
        yield match.group(1), number, match.group(2), raw


def _ttar(
    lines: list[tuple[int, str | None, bytes]], out: Collector,
) -> Iterator[tuple[str, int | None, str | None, bytes]]:
    """node_exporter's ttar: ``Path: p`` / ``Lines: n`` / n lines of content / ``Mode: m``."""
    i = 0
    while i < len(lines):
        number, text, raw = lines[i]
        i += 1
        if text is None or not text.startswith("Path: "):
            continue
        name = text[len("Path: "):].strip()
        if i >= len(lines) or not (lines[i][1] or "").startswith("Lines: "):
            out.dead("ttar Path without a Lines: count", offset=number, raw=raw)
            continue
        count_text = (lines[i][1] or "")[len("Lines: "):].strip()
        i += 1
        count = small_int(count_text, 10**6)
        if count is None:
            out.dead("ttar Lines: is not a number", offset=number + 1, raw=lines[i - 1][2])
            continue
        body = lines[i:i + count]
        i += count
        value = None if any(t is None for _, t, _ in body) else "\n".join(
            t or "" for _, t, _ in body)
        yield name, number, value, b"\n".join(r for _, _, r in body)
