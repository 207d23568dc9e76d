"""Picks the reader for an input: by ``--format``, or by sniffing its content (``auto``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Final

from fleetlog.ingest.readers import (
    FORMAT_NAMES,
    inputs,
    jsonl,
    kmsg,
    nvidia_smi_csv,
    nvidia_smi_xml,
    perfquery,
    prometheus,
    sacct,
    sysfs_ib,
)
from fleetlog.ingest.readers.base import ReadOptions, ReadResult
from fleetlog.ingest.readers.errors import ReaderError, UnknownFormat

# (path, options, the input's bytes) -> result; the bytes are read once, here, for every format
# but a folder (sysfs-ib), so sniffing never consumes what a pipe holds.
_Read = Callable[[Path, ReadOptions, bytes], ReadResult]

READERS: Final[dict[str, _Read]] = {
    "dcgm": lambda p, o, d: prometheus.read(p, o, d, fmt="dcgm"),
    "nvidia-smi-csv": nvidia_smi_csv.read,
    "nvidia-smi-xml": nvidia_smi_xml.read,
    "kmsg": kmsg.read,
    "sacct": sacct.read,
    "perfquery": perfquery.read,
    "sysfs-ib": sysfs_ib.read,
    "jsonl": jsonl.read,
}
FORMATS: Final = tuple(READERS)
assert FORMATS == FORMAT_NAMES, "keep ingest.readers.FORMAT_NAMES in step with READERS"

# Sniffing order: the most specific signatures first.
_SNIFFERS: Final[tuple[tuple[str, Callable[[str], bool]], ...]] = (
    ("nvidia-smi-xml", nvidia_smi_xml.sniff),
    ("jsonl", jsonl.sniff),
    ("dcgm", prometheus.sniff),
    ("perfquery", perfquery.sniff),
    ("sacct", sacct.sniff),
    ("nvidia-smi-csv", nvidia_smi_csv.sniff),
    ("sysfs-ib", sysfs_ib.sniff),
    ("kmsg", kmsg.sniff),
)
_HEAD_BYTES: Final = 64 * 1024


def head_text(data: bytes) -> str:
    """The first 64 KiB of an input as text for the sniffers: without a byte order mark, UTF-16
    converted, line ends as ``\\n`` (CR-only and CRLF inputs sniff like the others)."""
    head = data[:_HEAD_BYTES]
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = head.decode("utf-16", "replace")
    else:
        text = head.decode("utf-8", "replace")
    return text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def detect_format(path: Path, data: bytes | None = None,
                  opts: ReadOptions | None = None) -> str:
    """The format of ``path`` from its content (``data``: its bytes, read already), or
    ``UnknownFormat`` saying which ``--format`` reads it, or that none does (tried with
    ``opts``, the user's options)."""
    if data is None:
        if inputs.kind(path) == "folder":
            if sysfs_ib.sniff_path(path):
                return "sysfs-ib"
            raise UnknownFormat(
                f"{path} is a folder but not /sys/class/infiniband: pass files, or --format"
            )
        data = inputs.read_input(path)
    if sysfs_ib.sniff_path(path) or sysfs_ib.sniff_bytes(data):
        return "sysfs-ib"
    head = head_text(data)
    for name, sniff in _SNIFFERS:
        if sniff(head):
            return name
    opts = opts or ReadOptions()
    readable = _formats_that_read(path, data, opts)
    if readable:
        raise UnknownFormat(f"cannot tell the format of {path} from its content: --format "
                            f"{' or --format '.join(readable)} reads events from it")
    headerless = "" if opts.fields else (" (a sacct or nvidia-smi CSV without its header line "
                                         "is read with --format and --fields)")
    raise UnknownFormat(f"{path} is in none of the formats fleetlog reads: none of "
                        f"{', '.join(FORMATS)} recognised it{headerless}")


def _formats_that_read(path: Path, data: bytes, opts: ReadOptions) -> list[str]:
    """The file formats whose reader makes at least one event of the input's first 64 KiB (its
    whole lines): what to suggest when no signature matched. An input none of them reads (sinfo
    or squeue output, a CSV of something else) gets no "pass --format" that leads nowhere."""
    head = data[:_HEAD_BYTES]
    if len(data) > _HEAD_BYTES and b"\n" in head:
        head = head[: head.rindex(b"\n") + 1]
    readable = []
    for name, read in READERS.items():
        if name == "sysfs-ib":
            continue  # a folder's format: a file reaches it only by its signature
        try:
            if read(path, opts, head).events:
                readable.append(name)
        except ReaderError:
            continue  # this format cannot read it (or needs options only the user can give)
    return readable


def read_path(path: Path, fmt: str, opts: ReadOptions) -> ReadResult:
    """Read one input with ``fmt`` (``auto`` detects it).

    The input is checked (a file, a folder or a held pipe; see ``inputs``) and read once,
    bounded; detection and the reader see the same bytes.
    """
    if fmt != "auto" and fmt not in READERS:
        raise ReaderError(f"unknown format {fmt!r}: use auto or one of {', '.join(FORMATS)}")
    try:
        if inputs.kind(path) == "folder":
            name = detect_format(path) if fmt == "auto" else fmt
            if name != "sysfs-ib":
                raise ReaderError(f"{path} is a folder: --format {name} reads files (folders: "
                                  "--format sysfs-ib)")
            return sysfs_ib.read(path, opts)
        data = inputs.read_input(path)
        name = detect_format(path, data, opts) if fmt == "auto" else fmt
        return READERS[name](path, opts, data)
    except OSError as exc:
        raise ReaderError(f"cannot read {path}: {exc.strerror or exc}") from exc
