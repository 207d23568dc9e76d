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
modification time (a live folder or a pipe: the time of reading).

Hostile folders and archives: in a folder, an HCA entry may be a link (that is how
``/sys/class/infiniband/<hca>`` is built: links into ``/sys/devices``), but nothing below an HCA
may leave it: a counter or state file whose real path is outside its HCA's folder (a link to
``/etc/passwd``, a ``ports`` link elsewhere) is a dead letter and is not opened. A file that is
not a regular file (a FIFO, a device) is a dead letter and is not read; a counter
file the driver refuses to read (EINVAL) is "not reported" and counted. Each file is read up to
``_MAX_MEMBER`` bytes (a longer one is a dead letter); the files of a folder together, and a
tarball after decompression, are bounded by ``inputs.MAX_INPUT``. A tarball is recognised by its
content (gzip, bzip2, xz or plain tar) and decompressed here, so damaged compressed data is a
dead letter (what came before the damage is read) and a truncated one is said. Links, devices
and other special members of a tarball are counted, never followed.
"""

from __future__ import annotations

import bz2
import io
import lzma
import os
import re
import stat
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Final, Protocol

from fleetlog.ingest.readers import inputs
from fleetlog.ingest.readers.base import (
    Collector,
    ReadOptions,
    ReadResult,
    SampleTable,
    file_time_us,
    is_na,
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
# path, separator, value: the path is all before the first tab or ':' (one pass; a path with a
# '/' is checked after, so a giant line of slashes costs no backtracking).
_LISTING: Final = re.compile(r"^([^\t:]*)[\t:](.*)$", re.S)
_MAX_MEMBER: Final = 4096  # bytes of one sysfs file (a counter is a line of a few digits)
_TTAR_STRUCTURE: Final = ("Directory: ", "Mode: ", "SymlinkTo: ", "# ttar")
# Compressed tarballs by their magic bytes.
_GZIP: Final = b"\x1f\x8b"
_BZIP2: Final = b"BZh"
_XZ: Final = b"\xfd7zXZ\x00"

Entry = tuple[str, int | None, str | None, bytes]  # name, line (listings), text, raw bytes


def sniff(head: str) -> bool:
    if head.startswith(("Directory: ", "Path: ", "# ttar")):
        return "/ports/" in head
    return bool(re.search(r"(?m)^[^\t:]*/ports/\d+/(?:counters/\w+|state)(?:\t|:)", head))


def sniff_path(path: Path) -> bool:
    if path.is_dir():
        return any(path.glob("*/ports/*")) or any(path.glob("*/*/ports/*"))
    return path.suffix in (".tar", ".tgz") or path.name.endswith(".tar.gz")


def sniff_bytes(data: bytes) -> bool:
    """``data`` is a tar archive, plain or compressed (gzip, bzip2, xz)."""
    head = _decompress(data[:64 * 1024], 1024)[0] if _compression(data) else data[:1024]
    return head[257:262] == b"ustar"


def read(path: Path, opts: ReadOptions, data: bytes | None = None) -> ReadResult:
    """``data``: the input's bytes when the caller read them already (a pipe reads once)."""
    out = Collector(str(path), FORMAT, SOURCE)
    node = need_node(opts, "sysfs InfiniBand counters")
    table = SampleTable()
    if data is None and path.is_dir():
        entries: Iterator[Entry] = _folder(path, out)
    else:
        data = inputs.read_input(path) if data is None else data
        archive = _compression(data) is not None or sniff_bytes(data)
        entries = _tarball(data, str(path), out) if archive else _text(data, out)
    for name, line, value, raw in entries:
        _apply(table, node, name, line, value, raw, out, str(path))
    out.emit_ports(table, file_time_us(path, opts))
    return out.done()


def _apply(
    table: SampleTable, node: str, name: str, line: int | None, value: str | None, raw: bytes,
    out: Collector, origin: str,
) -> None:
    match = _PATH.search(name)
    if match is None:
        out.skip("sysfs files that are not port counters or state", line=line)
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
        out.skip("port counters not in the contract", line=line)
        table.touch(entity, port)
        return
    table.touch(entity, port)
    if value is None:
        out.dead("value is not UTF-8", offset=line, raw=raw, origin=where)
        return
    text = value.strip()
    out.take(line)
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


# ------------------------------------------------------------------------------------------------
# A folder (/sys/class/infiniband itself, or a copy)


def _folder(root: Path, out: Collector) -> Iterator[Entry]:
    # Explicit depths, not "**": /sys/class/infiniband/<hca> are symlinks, which "**" skips.
    patterns = ("*/ports/*/counters/*", "*/ports/*/state",
                "*/*/ports/*/counters/*", "*/*/ports/*/state")
    hcas: dict[Path, Path] = {}  # an HCA folder as listed -> its real path
    total = 0
    for path in sorted({p for pattern in patterns for p in root.glob(pattern)}):
        parts = path.relative_to(root).parts
        name = "/".join(parts)
        where = f"{root}:{name}"
        # <hca>/ports/<n>/counters/<name> or <hca>/ports/<n>/state
        hca = root.joinpath(*parts[:len(parts) - (4 if parts[-4:-3] == ("ports",) else 3)])
        if hca not in hcas:
            hcas[hca] = hca.resolve()
        data = _member(path, hcas[hca], out, where)
        if data is None:
            continue
        total += len(data)
        if total > inputs.MAX_INPUT:
            raise inputs.too_large(root, "input (the files of a folder together)")
        yield name, None, _decode(data), data


def _member(path: Path, hca: Path, out: Collector, where: str) -> bytes | None:
    """The first bytes of one sysfs file, or None (a dead letter or a count says why).

    ``hca``: the real path of the HCA folder the file belongs to; the file must be inside it.
    """
    real = path.resolve()
    if not real.is_relative_to(hca):
        out.dead("a link to outside its HCA's folder (the folder being read): not followed",
                 offset=None, raw=None, origin=where)
        return None
    try:
        before = real.stat()
        if not stat.S_ISREG(before.st_mode):
            out.dead("not a regular file (a FIFO, a device or a socket): not read",
                     offset=None, raw=None, origin=where)
            return None
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        out.skip("counter files the system refused to open (kept as not reported)")
        return None
    try:
        after = os.fstat(fd)
        if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino):
            out.dead("changed while being read (a link swapped?): not read", offset=None,
                     raw=None, origin=where)
            return None
        chunks: list[bytes] = []
        size = 0
        while size <= _MAX_MEMBER:
            chunk = os.read(fd, _MAX_MEMBER + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError:
        # Counters a driver refuses to read (EINVAL) are "not reported".
        out.skip("counter files the driver refused to read (kept as not reported)")
        return None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > _MAX_MEMBER:
        out.dead(f"longer than {_MAX_MEMBER} bytes, not a sysfs counter: not read", offset=None,
                 raw=data[:64], origin=where)
        return None
    return data


# ------------------------------------------------------------------------------------------------
# A tarball of the folder


class _Stream(Protocol):
    """bz2.BZ2Decompressor and lzma.LZMADecompressor."""

    @property
    def eof(self) -> bool: ...
    @property
    def needs_input(self) -> bool: ...
    def decompress(self, data: bytes, max_length: int = -1, /) -> bytes: ...


_CORRUPT: Final = (zlib.error, lzma.LZMAError, OSError, EOFError, ValueError)


def _compression(data: bytes) -> str | None:
    if data.startswith(_GZIP):
        return "gzip"
    if data.startswith(_BZIP2):
        return "bzip2"
    if data.startswith(_XZ):
        return "xz"
    return None


def _decompress(data: bytes, limit: int) -> tuple[bytes, str | None]:
    """At most ``limit`` + 1 bytes of a gzip / bzip2 / xz stream, and what went wrong (damaged,
    truncated) if anything. Fed 64 KiB at a time, so what precedes damage is kept, and bounded
    by ``limit`` whatever the compression ratio."""
    kind = _compression(data)
    parts: list[bytes] = []
    size = 0
    step = 64 * 1024
    try:
        if kind == "gzip":
            gz = zlib.decompressobj(wbits=31)
            for at in range(0, len(data), step):
                pending = data[at:at + step]
                while pending and not gz.eof and size <= limit:
                    chunk = gz.decompress(pending, limit + 1 - size)
                    pending = gz.unconsumed_tail
                    parts.append(chunk)
                    size += len(chunk)
                if gz.eof or size > limit:
                    break
            eof = gz.eof
        else:
            stream: _Stream = bz2.BZ2Decompressor() if kind == "bzip2" else lzma.LZMADecompressor()
            for at in range(0, len(data), step):
                chunk = stream.decompress(data[at:at + step], limit + 1 - size)
                while True:
                    parts.append(chunk)
                    size += len(chunk)
                    if size > limit or stream.eof or stream.needs_input:
                        break
                    chunk = stream.decompress(b"", limit + 1 - size)
                if size > limit or stream.eof:
                    break
            eof = stream.eof
    except _CORRUPT as exc:
        return b"".join(parts), f"{kind} data is damaged after {size:,} bytes: {exc}"
    if size <= limit and not eof:
        return b"".join(parts), f"{kind} data is truncated (ends after {size:,} bytes)"
    return b"".join(parts), None


def _tarball(data: bytes, origin: str, out: Collector) -> Iterator[Entry]:
    limit = inputs.MAX_INPUT
    problem = None
    if _compression(data):
        data, problem = _decompress(data, limit)
        if len(data) > limit:
            raise inputs.too_large(origin, "input (a tarball after decompression)")
        if problem:
            out.dead(f"tarball: {problem}; the members before it were read", offset=None,
                     raw=None)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
            for member in archive:
                if member.isdir():
                    continue
                if not member.isfile():
                    out.skip("tarball members that are links or special files (not followed)")
                    continue
                if not _PATH.search(member.name):
                    out.skip("sysfs files that are not port counters or state")
                    continue
                handle = archive.extractfile(member)
                raw = handle.read(_MAX_MEMBER + 1) if handle else b""
                if len(raw) > _MAX_MEMBER:
                    out.dead(f"longer than {_MAX_MEMBER} bytes, not a sysfs counter: not read",
                             offset=None, raw=raw[:64], origin=f"{origin}:{member.name}")
                    continue
                yield member.name, None, _decode(raw), raw
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        if problem is None:  # else the archive ends where the damage is: said once, above
            out.dead(f"tarball unreadable: {type(exc).__name__}: {exc}", offset=None, raw=None)


def _decode(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


# ------------------------------------------------------------------------------------------------
# Text: a listing (path<TAB>value, path:value) or a ttar archive


def _text(data: bytes, out: Collector) -> Iterator[Entry]:
    lines = out.lines(data)
    first = next(lines, None)
    if first is None:
        return
    if first[1] is not None and first[1].startswith(("Directory: ", "Path: ", "# ttar")):
        yield from _ttar([first, *lines], out)
        return
    for number, text, raw in (first, *lines):
        if text is None:
            out.dead("line is not UTF-8", offset=number, raw=raw)
            continue
        if not text.strip() or text.startswith("#"):
            out.take(number)
            continue
        match = _LISTING.match(text)
        if match is None or "/" not in match.group(1):
            out.dead("not a 'path<TAB>value' or 'path:value' line", offset=number, raw=raw)
            continue
        yield match.group(1), number, match.group(2), raw


def _ttar(lines: list[tuple[int, str | None, bytes]], out: Collector) -> Iterator[Entry]:
    """node_exporter's ttar: ``Path: p`` / ``Lines: n`` / n lines of content / ``Mode: m``."""
    i = 0
    while i < len(lines):
        number, text, raw = lines[i]
        i += 1
        if text is None:
            out.dead("line is not UTF-8", offset=number, raw=raw)
            continue
        if not text.startswith("Path: "):
            if text.startswith(_TTAR_STRUCTURE) or not text.strip():
                out.take(number)
            else:
                out.dead("not a ttar line (Path:, Lines:, Mode:, Directory:...)",
                         offset=number, raw=raw)
            continue
        name = text[len("Path: "):].strip()
        if i >= len(lines) or not (lines[i][1] or "").startswith("Lines: "):
            out.dead("ttar Path without a Lines: count", offset=number, raw=raw)
            continue
        count_text = (lines[i][1] or "")[len("Lines: "):].strip()
        out.take(lines[i][0])
        i += 1
        count = small_int(count_text, 10**6)
        if count is None:
            out.dead("ttar Lines: is not a number", offset=number + 1, raw=lines[i - 1][2])
            out.skipped_line(number)  # its Path: line, refused with it
            continue
        body = lines[i:i + count]
        i += count
        if len(body) < count:
            out.note(f"ttar entry at line {number} says Lines: {count} but the input ends "
                     f"after {len(body)}")
        for line, _, _ in body:
            out.take(line)
        value = None if any(t is None for _, t, _ in body) else "\n".join(
            t or "" for _, t, _ in body)
        yield name, number, value, b"\n".join(r for _, _, r in body)
