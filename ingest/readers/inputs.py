"""What an input may be, and reading it once, bounded.

An input is a regular file, a folder (``sysfs-ib``), or a pipe the process already holds
(``/dev/stdin``, ``/dev/fd/N``, ``/proc/self/fd/N``: ``cat f | fleetlog import /dev/stdin``,
``<(cat f)``). It is read once, whole and bounded: ``--format auto`` sniffs the bytes that were
read and the reader gets those same bytes, so nothing sniffed from a pipe is lost.

Refused with a one-line ``ReaderError`` (nothing read):

- device files (``/dev/zero``, ``/dev/kmsg``, a terminal): they never end, or end when someone
  types Ctrl-D; save the output to a file first;
- a named pipe (FIFO) given by its path: opening one waits for a writer, and ``import`` reads
  every input before it writes anything, so one FIFO without a writer would hang the import.
  Redirect it instead (``fleetlog import ... /dev/stdin < FIFO``): the shell opens it;
- sockets;
- an input beyond ``MAX_INPUT`` bytes.

Limits (documented in docs/formats.md): ``MAX_INPUT`` per input (a file, a pipe, a tarball
after decompression, the files of a folder together), ``MAX_LINE`` per line (one record; a longer
line is a dead letter), ``MAX_DOCUMENT`` per XML document (a larger one is a dead letter).
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import BinaryIO, Final, Literal

from fleetlog.ingest.readers.errors import ReaderError

MAX_INPUT: Final = 1 << 30  # 1 GiB: one input
MAX_LINE: Final = 1 << 20  # 1 MiB: one line (one record)
MAX_DOCUMENT: Final = 64 << 20  # 64 MiB: one nvidia-smi XML document
_CHUNK: Final = 1 << 20

# A descriptor this process already holds, named through /dev or /proc.
_DESCRIPTOR: Final = re.compile(r"^/(?:dev/(stdin)|dev/fd/(\d+)|proc/self/fd/(\d+)"
                                r"|proc/(\d+)/fd/(\d+))$")

Kind = Literal["file", "folder", "pipe"]


def size_text(n: int) -> str:
    """1073741824 -> '1 GiB' (the limits are whole MiB or GiB)."""
    if n >= 1 << 30 and n % (1 << 30) == 0:
        return f"{n >> 30} GiB"
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return f"{n >> 20} MiB"
    return f"{n:,} bytes"


def descriptor(path: Path) -> int | None:
    """The descriptor number ``path`` names (``/dev/stdin`` -> 0), if it names one of ours."""
    match = _DESCRIPTOR.match(str(path))
    if match is None:
        return None
    stdin, dev_fd, self_fd, pid, pid_fd = match.groups()
    if stdin:
        return 0
    if pid is not None:
        return int(pid_fd) if int(pid) == os.getpid() else None
    return int(dev_fd or self_fd)


def kind(path: Path) -> Kind:
    """What ``path`` is, or a ``ReaderError`` saying why it is not an input fleetlog reads."""
    try:
        info = path.stat()
    except FileNotFoundError as exc:
        raise ReaderError(f"{path} does not exist") from exc
    except OSError as exc:
        raise ReaderError(f"cannot read {path}: {exc.strerror or exc}") from exc
    mode = info.st_mode
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISREG(mode):
        return "file"
    held = descriptor(path) is not None
    if stat.S_ISFIFO(mode):
        if held:
            return "pipe"
        raise ReaderError(
            f"{path} is a named pipe (FIFO): fleetlog does not open one (it waits for a writer); "
            f"redirect it instead: fleetlog import ... /dev/stdin < {path}"
        )
    if stat.S_ISCHR(mode) and held:
        raise ReaderError(f"{path} is a terminal or a device, not a capture: pipe the file in "
                          f"(cat FILE | fleetlog import ... {path})")
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        raise ReaderError(
            f"{path} is a device file, not a capture (it may never end): save its output to a "
            "file and import that (e.g. dmesg --time-format iso > dmesg.log)"
        )
    raise ReaderError(f"{path} is not a file, a folder or a pipe (a socket?): save its output to "
                      "a file and import that")


def too_large(path: Path | str, what: str = "input") -> ReaderError:
    return ReaderError(
        f"{path} is larger than {size_text(MAX_INPUT)}, the limit of one {what}: split it "
        "(e.g. split -l 1000000) and import the parts"
    )


def read_input(path: Path) -> bytes:
    """The whole of ``path`` (a file or a held pipe), at most ``MAX_INPUT`` bytes."""
    found = kind(path)
    if found == "folder":
        raise ReaderError(f"{path} is a folder: this format reads files (folders: --format "
                          "sysfs-ib)")
    try:
        if found == "pipe":
            number = descriptor(path)
            assert number is not None
            # Read the descriptor itself (a dup): reopening it through /proc could wait for a
            # writer, and a pipe can be read only once anyway.
            with os.fdopen(os.dup(number), "rb", buffering=0) as handle:
                return _bounded(handle, path)
        if path.stat().st_size > MAX_INPUT:
            raise too_large(path)
        with path.open("rb", buffering=0) as handle:
            return _bounded(handle, path)
    except OSError as exc:
        raise ReaderError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _bounded(handle: BinaryIO, path: Path) -> bytes:
    buffer = bytearray()
    while True:
        chunk = handle.read(min(_CHUNK, MAX_INPUT + 1 - len(buffer)))
        if not chunk:
            return bytes(buffer)
        buffer += chunk
        if len(buffer) > MAX_INPUT:
            raise too_large(path)
