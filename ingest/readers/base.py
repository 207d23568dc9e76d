"""What every reader shares: options, the result, errors, time handling, and event collection.

A reader turns one input (a file, a folder, or text fetched from an endpoint) into contract events
plus dead letters. It never raises on bad input: a line or record it cannot read becomes a
``DeadLetter(origin=path, offset=line_number, stage="parse", ...)``. It raises ``ReaderError`` only
for what the user must decide (a missing ``--tz``, ``--node``, ``--boot-time``): those are one-line
messages that say which option to pass.

Accounting: a line-based reader reads its input through ``Collector.lines`` and says what became
of every line: taken (an event, a sample row, a header, a blank line or a comment), a dead letter,
or counted under ``skipped``. A line no rule took is counted as skipped under ``UNTAKEN`` (a
reader bug, said rather than dropped); the fuzz tests hold that it never happens.

Times: readers take event time from the data where it has one. Naive times (no zone in the data)
are converted with ``--tz`` and never guessed; without ``--tz`` the import stops with a one-line
error. Inputs with no time at all (a /metrics capture, perfquery, sysfs counters) use ``--time``,
else the file's modification time (a folder read live: the time of reading).
"""

from __future__ import annotations

import hashlib
import math
import stat
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from fleetlog.ingest import contract as c
from fleetlog.ingest.contract import DeadLetter
from fleetlog.ingest.contract.dead_letter import MAX_RAW as MAX_RAW  # readers import it here
from fleetlog.ingest.contract.time_range import check_us as check_us  # readers import it here
from fleetlog.ingest.readers import inputs
from fleetlog.ingest.readers.errors import MissingOption, ReaderError

MAX_REASON: Final = 300
MAX_NOTES: Final = 20  # distinct notes kept per input; more are counted in a last note
UNTAKEN: Final = "lines no rule of the reader took (a fleetlog bug: please report it)"

# What became of a line (a later, graver outcome replaces an earlier one).
_PENDING: Final = 0
_TAKEN: Final = 1
_SKIPPED: Final = 2
_DEAD: Final = 3
_OUTCOMES: Final = {_TAKEN: "taken", _SKIPPED: "skipped", _DEAD: "dead"}
_RAISE_TO: Final = {state: bytes(max(v, state) for v in range(256)) for state in _OUTCOMES}
_BOM_UTF8: Final = b"\xef\xbb\xbf"
_BOMS_UTF16: Final = (b"\xff\xfe", b"\xfe\xff")


@dataclass(frozen=True)
class ReadOptions:
    """What the user told us about inputs that do not say it themselves."""

    node: str | None = None  # node (or switch / ``<node>/<hca>`` for port counters)
    time: datetime | None = None  # event time for inputs with no time (aware)
    tz: tzinfo | None = None  # zone of naive times (sacct, nvidia-smi, dmesg -T)
    boot_time: datetime | None = None  # for monotonic kernel stamps (dmesg, /dev/kmsg)
    year: int | None = None  # for syslog stamps without a year ("Feb 23 16:24:18")
    fields: tuple[str, ...] | None = None  # columns of a header-less CSV / sacct file


@dataclass
class ReadResult:
    """One input's events and dead letters, with counts of what was deliberately not mapped."""

    origin: str
    format: str
    events: list[c.Envelope] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> count (not errors)
    notes: list[str] = field(default_factory=list)
    lines: int | None = None  # lines of a text input (None: a folder or a tarball)
    line_outcomes: Counter[str] = field(default_factory=Counter)  # taken / dead / skipped

    def summary(self) -> dict[str, object]:
        types = Counter(e.type for e in self.events)
        rows = sum(
            e.payload.rows for e in self.events
            if isinstance(e.payload, c.GpuSampled | c.PortSampled)
        )
        return {
            "path": self.origin,
            "format": self.format,
            **({} if self.lines is None else {"lines": self.lines}),
            "events": len(self.events),
            "event_types": dict(sorted(types.items())),
            "sample_rows": rows,
            "dead_letters": len(self.dead),
            "skipped": dict(sorted(self.skipped.items())),
            "notes": list(self.notes),
        }


def short(text: str, limit: int = MAX_REASON) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Collector:
    """Accumulates a reader's events and dead letters for one origin.

    Event ids are content hashes (``make_event`` without ``id``), so importing the same input
    twice lands nothing new. Two identical facts in one input (the same XID line twice in the
    same second) are both kept: the n-th repeat gets an id derived from the first and n.
    """

    def __init__(self, origin: str, fmt: str, source: str) -> None:
        self.result = ReadResult(origin=origin, format=fmt)
        self.source = source
        self._seen: Counter[str] = Counter()
        self._gpus_registered: set[tuple[str, int, str | None, str]] = set()
        self._lines = bytearray()  # outcome per line (index: line number - 1)
        self._notes: set[str] = set()
        self._notes_cut = 0

    # -- the line ledger -------------------------------------------------------------------------

    def lines(self, data: bytes) -> Iterator[tuple[int, str | None, bytes]]:
        """(1-based line number, text or None when not UTF-8, raw bytes) for each line.

        Lines end at ``\\n`` (a trailing ``\\r`` is dropped), so numbers match ``grep -n``; an
        input whose lines end with a lone ``\\r`` (classic Mac, some consoles) is split there,
        and says so in a note. A UTF-8 byte order mark is dropped; a UTF-16 input (with its byte
        order mark, as PowerShell writes) is converted. A line longer than ``MAX_LINE`` is a
        dead letter (its first ``MAX_RAW`` bytes kept) and is not yielded.
        """
        data = self.decoded(data)
        lone_cr = data.count(b"\r") - data.count(b"\r\n")
        if lone_cr and lone_cr > data.count(b"\n"):
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            self.note("lines end with a carriage return only (CR): read as line ends; line "
                      "numbers count them")
        self.begin_lines(0)
        end = len(data) - 1 if data.endswith(b"\n") else len(data)
        if end <= 0:
            return
        limit = inputs.MAX_LINE
        start, number = 0, 0
        while True:
            newline = data.find(b"\n", start, end)
            stop = end if newline < 0 else newline
            number += 1
            self._lines.append(_PENDING)
            self.result.lines = number
            if stop - start > limit:
                self.dead(f"line is longer than {inputs.size_text(limit)} ({stop - start:,} "
                          "bytes), the limit of one record: not read", offset=number,
                          raw=data[start:start + MAX_RAW])
            else:
                raw = data[start:stop].removesuffix(b"\r")
                try:
                    text: str | None = raw.decode("utf-8")
                except UnicodeDecodeError:
                    text = None
                yield number, text, raw
            if newline < 0:
                return
            start = newline + 1

    def decoded(self, data: bytes) -> bytes:
        """``data`` as UTF-8 bytes: without a UTF-8 byte order mark, UTF-16 converted."""
        if data.startswith(_BOM_UTF8):
            return data[len(_BOM_UTF8):]
        if data.startswith(_BOMS_UTF16):
            try:
                converted = data.decode("utf-16").encode("utf-8")
            except UnicodeError:
                self.note("starts with a UTF-16 byte order mark but is not UTF-16: read as bytes")
                return data
            self.note("input is UTF-16: converted to UTF-8")
            return converted
        return data

    def begin_lines(self, count: int) -> None:
        """Start the ledger of a text input of ``count`` lines (``lines`` extends it)."""
        self._lines = bytearray(count)
        self.result.lines = count

    def take(self, line: int | None) -> None:
        """Line ``line`` went into an event or a sample row, or is structure (header, blank)."""
        self._mark(line, line, _TAKEN)

    def mark_range(self, first: int, last: int, outcome: str) -> None:
        """Lines ``first``..``last`` (a document) had ``outcome``: taken, skipped or dead."""
        state = {v: k for k, v in _OUTCOMES.items()}[outcome]
        self._mark(first, last, state)

    def _mark(self, first: int | None, last: int | None, state: int) -> None:
        if first is None or last is None or not self._lines:
            return
        lo, hi = max(first, 1) - 1, min(last, len(self._lines))
        if hi - lo == 1:
            self._lines[lo] = max(self._lines[lo], state)
        elif hi > lo:
            self._lines[lo:hi] = self._lines[lo:hi].translate(_RAISE_TO[state])

    def done(self) -> ReadResult:
        """The result, with every line accounted for and cut notes counted."""
        if self._lines:
            untaken = self._lines.count(_PENDING)
            if untaken:
                self.skip(UNTAKEN, untaken)
                self._lines = self._lines.replace(bytes([_PENDING]), bytes([_SKIPPED]))
            self.result.line_outcomes = Counter(
                {name: self._lines.count(state) for state, name in _OUTCOMES.items()
                 if self._lines.count(state)})
        if self._notes_cut:
            self.result.notes.append(f"{self._notes_cut} more notes not shown")
            self._notes_cut = 0
        return self.result

    # -- events, dead letters, counts ------------------------------------------------------------

    def event(self, payload: c.Payload, time_us: int) -> c.Envelope:
        event = c.make_event(payload, time_us=time_us, source=self.source)
        repeat = self._seen[event.id]
        self._seen[event.id] += 1
        if repeat:
            derived = hashlib.blake2b(f"{event.id}#{repeat}".encode(), digest_size=12).hexdigest()
            event = c.make_event(payload, time_us=time_us, source=self.source, id=derived)
        self.result.events.append(event)
        return event

    def dead(
        self, reason: str, *, offset: int | None, raw: bytes | str | None,
        origin: str | None = None,
    ) -> None:
        data = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw
        self.add_dead(DeadLetter(
            origin=origin or self.result.origin, stage="parse", error=short(reason),
            raw=None if data is None else data[:MAX_RAW], offset=offset,
        ))

    def add_dead(self, letter: DeadLetter) -> None:
        """Keep ``letter``; its ``offset`` (a line number) is marked dead in the ledger."""
        self.result.dead.append(letter)
        if letter.origin == self.result.origin:
            self._mark(letter.offset, letter.offset, _DEAD)

    def register_gpu(self, node: str, index: int, pci_bus_id: str | None, *, uuid: str = "",
                     model: str = "", time_us: int) -> None:
        """One ``gpu.registered`` per GPU and PCI address an input lists (the first time it
        does): the inventory that maps a kernel XID line's PCI address to ``gpu:<node>/<i>``.
        Nothing when the input gives no PCI address: without one the event maps nothing."""
        bus = c.normalize_pci_bus_id(pci_bus_id)
        key = (node, index, bus, uuid)
        if bus is None or key in self._gpus_registered:
            return
        self._gpus_registered.add(key)
        self.event(c.GpuRegistered(node=node, gpu=index, pci_bus_id=bus, uuid=uuid,
                                   model=model), time_us)

    def emit_gpus(self, table: SampleTable, time_us: int) -> None:
        """One ``gpu.sampled`` per node of ``table``, at ``time_us``."""
        for payload in table.gpu_payloads():
            self.event(payload, time_us)
        self._rejected(table)

    def emit_ports(self, table: SampleTable, time_us: int) -> None:
        """One ``port.sampled`` per switch / host HCA of ``table``, at ``time_us``."""
        for payload in table.port_payloads():
            self.event(payload, time_us)
        self._rejected(table)

    def _rejected(self, table: SampleTable) -> None:
        if table.rejected:
            self.skip("values beyond their column's range (kept as not reported)",
                      table.rejected)
            table.rejected = 0

    def skip(self, reason: str, count: int = 1, *, line: int | None = None) -> None:
        """Count ``count`` things deliberately not mapped (``line``: the line they were on)."""
        self.result.skipped[reason] += count
        self._mark(line, line, _SKIPPED)

    def skipped_line(self, line: int | None) -> None:
        """Line ``line`` belongs to something already counted under ``skipped``."""
        self._mark(line, line, _SKIPPED)

    def note(self, text: str) -> None:
        """Say something about the input once; beyond ``MAX_NOTES`` notes, count them."""
        if text in self._notes:
            return
        if len(self._notes) >= MAX_NOTES:
            self._notes_cut += 1
            return
        self._notes.add(text)
        self.result.notes.append(text)


# ------------------------------------------------------------------------------------------------
# Time


def parse_tz(text: str) -> tzinfo:
    """``UTC``, an IANA zone (``America/New_York``) or a fixed offset (``+02:00``)."""
    value = text.strip()
    if value.upper() in ("UTC", "Z", "GMT"):
        return UTC
    if value[:1] in "+-":
        try:
            parsed = datetime.strptime(value.replace(":", ""), "%z")
        except ValueError as exc:
            raise ReaderError(f"--tz {text!r}: write an offset as +02:00 or -0500") from exc
        offset = parsed.utcoffset()
        assert offset is not None
        return timezone(offset)
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ReaderError(
            f"--tz {text!r} is not a time zone: use UTC, an IANA name such as "
            "America/New_York, or an offset such as +02:00"
        ) from exc


def localize(naive: datetime, tz: tzinfo) -> tuple[datetime, str]:
    """Attach ``tz`` to a naive local time: (aware, "ok" | "ambiguous" | "nonexistent").

    An ambiguous time (the repeated hour when clocks go back) resolves to its first occurrence;
    a nonexistent one (the skipped hour when clocks go forward) is reported, not shifted.
    """
    first = naive.replace(tzinfo=tz, fold=0)
    second = naive.replace(tzinfo=tz, fold=1)
    if first.utcoffset() == second.utcoffset():
        return first, "ok"
    back = first.astimezone(UTC).astimezone(tz).replace(tzinfo=None)
    if back != naive:
        return first, "nonexistent"
    return first, "ambiguous"


def to_us(t: datetime) -> int:
    return c.to_us(t)


def aware_us(t: datetime) -> int | str:
    """UTC microseconds of an aware time, or why it cannot be an event time."""
    try:
        return check_us(c.to_us(t))
    except (OverflowError, ValueError):
        return f"time {t.isoformat()} is out of range"


def local_us(naive: datetime, tz: tzinfo, out: Collector) -> int | str:
    """A naive local time in ``tz`` as UTC microseconds, or why it cannot be one."""
    try:
        aware, status = localize(naive, tz)
    except (OverflowError, ValueError):
        return f"time {naive.isoformat(sep=' ')} is out of range"
    if status == "nonexistent":
        return (f"time {naive.isoformat(sep=' ')} does not exist in the --tz zone (skipped by "
                "a DST change)")
    if status == "ambiguous":
        out.skip("ambiguous local times (first occurrence taken)")
    return aware_us(aware)


def us_of_epoch(seconds: float) -> int:
    if not math.isfinite(seconds):
        raise ValueError(f"time {seconds} is not finite")
    return check_us(round(seconds * 1_000_000))


def file_time_us(path: Path, opts: ReadOptions) -> int:
    """Event time for inputs without one: ``--time``, else the file's modification time (a
    folder or a pipe: the time of reading)."""
    if opts.time is not None:
        return to_us(opts.time)
    try:
        info = path.stat()
    except OSError:
        info = None
    if info is None or not stat.S_ISREG(info.st_mode):
        return us_of_epoch(datetime.now(UTC).timestamp())
    return info.st_mtime_ns // 1000


def need_tz(opts: ReadOptions, what: str) -> tzinfo:
    if opts.tz is None:
        raise MissingOption(
            f"{what} have no time zone: pass --tz with the zone they were written in "
            "(e.g. --tz UTC or --tz America/New_York); fleetlog never guesses"
        )
    return opts.tz


def need_node(opts: ReadOptions, what: str) -> str:
    if not opts.node:
        raise MissingOption(f"{what} does not name its node: pass --node NAME")
    return opts.node


def boot_plus(opts: ReadOptions, seconds: float, what: str) -> datetime:
    """Boot time + ``seconds``; MissingOption without --boot-time, ValueError if out of range."""
    if opts.boot_time is None:
        raise MissingOption(
            f"{what} carry seconds since boot: pass --boot-time (ISO 8601 with zone, e.g. the "
            "output of `uptime -s` plus the zone), or collect with `dmesg --time-format iso`"
        )
    try:
        return opts.boot_time + timedelta(seconds=seconds)
    except OverflowError as exc:
        raise ValueError(f"{seconds} s after boot is out of range") from exc


# ------------------------------------------------------------------------------------------------
# Values


def small_int(text: str | None, limit: int) -> int | None:
    """``text`` as an int in 0..limit if it is 1-9 ASCII digits, else None (never raises)."""
    value = (text or "").strip()
    if not (0 < len(value) <= 9 and value.isascii() and value.isdigit()):
        return None
    number_ = int(value)
    return number_ if number_ <= limit else None


NA_WORDS: Final = frozenset({"", "n/a", "[n/a]", "na", "nan", "-nan", "none", "unknown",
                             "[not supported]", "not supported", "[unknown error]",
                             "[insufficient permissions]", "[gpu is lost]", "<<<null>>>"})


def is_na(text: str) -> bool:
    value = text.strip().lower()
    return value in NA_WORDS or value.startswith("n/a ")


def number(text: str) -> float | None:
    """A number from tool output (``"631.95 W"``, ``"0x0000000000000001"``, ``"Yes"``).

    Returns None for "not reported" words (N/A, [N/A], [Not Supported], ...). Raises ValueError
    for text that is neither a number nor a "not reported" word.
    """
    value = text.strip()
    if is_na(value):
        return None
    lowered = value.lower()
    if lowered in ("yes", "active", "enabled", "true"):
        return 1.0
    if lowered in ("no", "not active", "disabled", "false"):
        return 0.0
    head = value.split()[0] if " " in value else value
    if len(head) > 40:
        raise ValueError(f"{head[:20]!r}... is too long for a number")
    if head.lower().startswith("0x"):
        return float(int(head, 16))  # 40 characters: at most 2**152, a float holds it
    result = float(head)
    if math.isinf(result):
        raise ValueError(f"{text!r} is infinite")
    return None if math.isnan(result) else result


# ------------------------------------------------------------------------------------------------
# Sample batches


_F4_COLUMNS: Final = frozenset(
    s.column for s in (*c.GPU_SIGNALS, *c.PORT_SIGNALS) if s.dtype == "<f4")
_F4_MAX: Final = float(np.finfo(np.float32).max)
_F8_MAX: Final = float(np.finfo(np.float64).max)


class SampleTable:
    """Rows of one scrape keyed by (entity, index) -> column -> value; builds contract batches."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[int, dict[str, float]]] = {}
        self.rejected = 0  # values a column cannot hold (float32 overflow, infinities)

    def set(self, entity: str, index: int, column: str, value: float | None) -> None:
        row = self.rows.setdefault(entity, {}).setdefault(index, {})
        if value is None:
            return
        limit = _F4_MAX if column in _F4_COLUMNS else _F8_MAX
        if not abs(value) <= limit:
            self.rejected += 1
            return
        row[column] = value

    def touch(self, entity: str, index: int) -> None:
        self.rows.setdefault(entity, {}).setdefault(index, {})

    def get(self, entity: str, index: int, column: str) -> float | None:
        return self.rows.get(entity, {}).get(index, {}).get(column)

    def gpu_payloads(self) -> Iterator[c.GpuSampled]:
        """One ``gpu.sampled`` per node (its key keeps the node's scrapes in order)."""
        for node in sorted(self.rows):
            gpus = sorted(self.rows[node])
            yield c.gpu_batch([node], [len(gpus)], gpus,
                              _columns(self.rows[node], gpus, c.GPU_SIGNAL_BY_COLUMN))

    def port_payloads(self) -> Iterator[c.PortSampled]:
        """One ``port.sampled`` per switch / host HCA."""
        for switch in sorted(self.rows):
            ports = sorted(self.rows[switch])
            yield c.port_batch([switch], [len(ports)], ports,
                               _columns(self.rows[switch], ports, c.PORT_SIGNAL_BY_COLUMN))


def _columns(
    rows: Mapping[int, Mapping[str, float]], order: list[int], signals: Mapping[str, c.Signal],
) -> dict[str, list[float]]:
    present = {column for row in rows.values() for column in row}
    return {
        column: [rows[i].get(column, np.nan) for i in order]
        for column in signals if column in present
    }
