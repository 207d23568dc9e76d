"""Picks the reader for an input: by ``--format``, or by sniffing its content (``auto``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Final

from fleetlog.ingest.readers import (
    FORMAT_NAMES,
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

_Read = Callable[[Path, ReadOptions], ReadResult]

READERS: Final[dict[str, _Read]] = {
    "dcgm": lambda p, o: prometheus.read(p, o, "dcgm"),
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


def detect_format(path: Path) -> str:
    """The format of ``path`` from its content, or ``UnknownFormat`` saying what to pass."""
    if sysfs_ib.sniff_path(path):
        return "sysfs-ib"
    if path.is_dir():
        raise UnknownFormat(
            f"{path} is a folder but not /sys/class/infiniband: pass files, or --format"
        )
    with path.open("rb") as handle:
        head = handle.read(_HEAD_BYTES).decode("utf-8", "replace")
    for name, sniff in _SNIFFERS:
        if sniff(head):
            return name
    raise UnknownFormat(
        f"cannot tell the format of {path}: pass --format (one of {', '.join(FORMATS)})"
    )


def read_path(path: Path, fmt: str, opts: ReadOptions) -> ReadResult:
    """Read one input with ``fmt`` (``auto`` detects it)."""
    if not path.exists():
        raise ReaderError(f"{path} does not exist")
    name = detect_format(path) if fmt == "auto" else fmt
    reader = READERS.get(name)
    if reader is None:
        raise ReaderError(f"unknown format {fmt!r}: use auto or one of {', '.join(FORMATS)}")
    try:
        return reader(path, opts)
    except OSError as exc:
        raise ReaderError(f"cannot read {path}: {exc.strerror or exc}") from exc


