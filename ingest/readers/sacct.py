"""Slurm ``sacct --parsable2`` (or ``--parsable``) job records -> job events.

Per job allocation record (``JobID`` without a ``.step`` suffix; steps are counted, not mapped):

- ``Submit`` -> ``job.submitted`` (GPUs from ``AllocTRES``, else ``ReqTRES``, ``gres/gpu``;
  vcluster = ``Partition``, else ``Cluster``);
- ``Start`` -> ``job.started``, and ``job.placed`` with the expanded ``NodeList``;
- ``End`` with ``COMPLETED`` -> ``job.completed``;
- ``End`` with ``CANCELLED [by N]`` -> ``job.cancelled`` (``by`` = N): stopped on purpose, not a
  failure, so analysis opens no incident for it;
- ``End`` with ``FAILED``, ``NODE_FAIL``, ``TIMEOUT``, ``OUT_OF_MEMORY``,
  ``BOOT_FAIL``, ``DEADLINE`` or ``PREEMPTED`` -> ``job.failed``: ``reason`` is the state as sacct
  wrote it; ``exit_code`` from ``ExitCode`` ``N:S``: N, else
  128+S when killed by signal S, else Slurm's own code (``0:125`` for OOM -> 125); None (NULL)
  without the column, and ``lost_s`` None: sacct does not know the job's checkpoints;
- ``End`` with ``REQUEUED`` -> ``job.restarted`` with reason ``REQUEUED`` (the run ended; the
  job went back to the queue).

What the states mean for analysis (``job_outcomes`` view, docs/faults.md#jobs): NODE_FAIL and
BOOT_FAIL are the scheduler's evidence about the nodes; every other end is the job's own
outcome, which opens no incident.

Running and pending jobs yield only what has happened. Unknown states go to dead letters.

Time zone: sacct prints the cluster's local time without a zone, so ``--tz`` is required (unless
the times are epoch seconds, ``SLURM_TIME_FORMAT=%s``, or carry an offset). An ambiguous local
time (clocks going back) takes its first occurrence and is counted; a nonexistent one (clocks
going forward) is a dead letter.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Final

from fleetlog.ingest import contract as c
from fleetlog.ingest.readers.base import (
    Collector,
    ReadOptions,
    ReadResult,
    aware_us,
    check_us,
    local_us,
    need_tz,
    small_int,
)
from fleetlog.ingest.readers.errors import MissingOption
from fleetlog.ingest.readers.inputs import read_input

FORMAT: Final = "sacct"
SOURCE: Final = "slurm"

_FAILED: Final = frozenset({"FAILED", "NODE_FAIL", "TIMEOUT", "OUT_OF_MEMORY", "CANCELLED",
                            "BOOT_FAIL", "DEADLINE", "PREEMPTED"})
_ACTIVE: Final = frozenset({"RUNNING", "PENDING", "SUSPENDED", "REQUEUE_HOLD", "REQUEUE_FED",
                            "RESIZING", "REVOKED", "SIGNALING", "STAGE_OUT", "STOPPED",
                            "CONFIGURING", "COMPLETING", "SPECIAL_EXIT", "RESV_DEL_HOLD"})
_NO_TIME: Final = frozenset({"", "unknown", "none", "n/a"})
_GPU_TRES: Final = re.compile(r"(?:^|,)gres/gpu(?::[^=,]+)?=([0-9]{1,9})(?=,|$)")
_EXIT: Final = re.compile(r"^([0-9]{1,9})(?::([0-9]{1,9}))?$")
_MAX_HOSTS: Final = 100_000


def sniff(head: str) -> bool:
    first = next((line for line in head.splitlines() if line.strip()), "")
    fields = {f.strip().lower() for f in first.split("|")}
    return "|" in first and "state" in fields and bool({"jobid", "jobidraw"} & fields)


def read(path: Path, opts: ReadOptions, data: bytes | None = None) -> ReadResult:
    """``data``: the input's bytes when the caller read them already (a pipe reads once)."""
    return parse(read_input(path) if data is None else data, origin=str(path), opts=opts)


def _time(text: str, opts: ReadOptions, out: Collector) -> int | str | None:
    """UTC microseconds, None when sacct says the time is unknown, or a reason string."""
    value = text.strip()
    if value.lower() in _NO_TIME:
        return None
    if value.isascii() and value.isdigit() and len(value) <= 12:
        try:
            return check_us(int(value) * 1_000_000)
        except ValueError as exc:
            return str(exc)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return f"time {value!r} is not ISO 8601"
    if parsed.tzinfo is not None:
        return aware_us(parsed)
    return local_us(parsed, need_tz(opts, "sacct times"), out)


def _exit_code(text: str | None) -> int | str | None:
    if text is None or not text.strip():
        return None
    match = _EXIT.match(text.strip())
    if match is None:
        return f"ExitCode {text!r} is not N:S"
    code, signal = int(match.group(1)), int(match.group(2) or 0)
    if code == 0 and signal:  # killed by a signal: the shell's 128+N; Slurm's own codes as-is
        code = 128 + signal if signal < 65 else signal
    return code if code < 2**31 else f"ExitCode {text!r} is out of range"


def _gpus(row: dict[str, str]) -> int:
    for column in ("alloctres", "reqtres"):
        found = [int(n) for n in _GPU_TRES.findall(row.get(column, ""))]
        if found:
            return min(sum(found), 2**31 - 1)
    return 0


def expand_hostlist(text: str) -> list[str]:
    """Slurm hostlist -> names: ``node[01-03,7],gpu9`` -> node01, node02, node03, node7, gpu9."""
    value = text.strip()
    if not value or value.lower() in ("none assigned", "(null)", "none"):
        return []
    parts: list[str] = []
    depth, start = 0, 0
    for i, char in enumerate(value):
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced ']' in {text!r}")
        elif char == "," and depth == 0:
            parts.append(value[start:i])
            start = i + 1
    if depth:
        raise ValueError(f"unbalanced '[' in {text!r}")
    parts.append(value[start:])
    hosts: list[str] = []
    for part in parts:
        expanded = [""]
        for token in re.split(r"(\[[^\]]*\])", part):
            if token.startswith("["):
                choices = _ranges(token[1:-1])
                expanded = [h + x for h in expanded for x in choices]
            else:
                expanded = [h + token for h in expanded]
            if len(expanded) + len(hosts) > _MAX_HOSTS:
                raise ValueError(f"hostlist {text[:60]!r} expands to more than {_MAX_HOSTS}")
        hosts.extend(h for h in expanded if h)
    return hosts


def _ranges(body: str) -> list[str]:
    out: list[str] = []
    for item in body.split(","):
        lo, sep, hi = item.partition("-")
        if small_int(lo, 10**9) is None or (sep and small_int(hi, 10**9) is None):
            raise ValueError(f"bad hostlist range {item!r}")
        if not sep:
            out.append(lo)
            continue
        if int(hi) < int(lo) or int(hi) - int(lo) > _MAX_HOSTS:
            raise ValueError(f"bad hostlist range {item!r}")
        width = len(lo)
        out.extend(str(n).zfill(width) for n in range(int(lo), int(hi) + 1))
    return out


def parse(data: bytes, *, origin: str, opts: ReadOptions) -> ReadResult:
    out = Collector(origin, FORMAT, SOURCE)
    header = [f.strip().lower() for f in opts.fields] if opts.fields else None
    for number, text, raw in out.lines(data):
        if text is None:
            out.dead("line is not UTF-8", offset=number, raw=raw)
            continue
        if not text.strip():
            out.take(number)
            continue
        cells = text.split("|")
        if text.endswith("|") and header is not None and len(cells) == len(header) + 1:
            cells = cells[:-1]  # --parsable ends every line with '|'
        lowered = [cell.strip().lower() for cell in cells]
        if "state" in lowered and ("jobid" in lowered or "jobidraw" in lowered):
            header = [h for h in lowered if h] if text.endswith("|") else lowered
            out.take(number)
            continue
        if header is None:
            raise MissingOption(
                f"{origin} has no header line (sacct --noheader): pass --fields with the "
                "sacct --format list (it needs JobID and State)"
            )
        if len(cells) != len(header):
            out.dead(f"{len(cells)} fields where the header has {len(header)}", offset=number,
                     raw=raw)
            continue
        row = dict(zip(header, cells, strict=True))
        before = len(out.result.events)
        if _job(row, number, raw, opts, out) and len(out.result.events) == before:
            out.skip("records with nothing to land yet (Submit, Start and End unknown)",
                     line=number)
        else:
            out.take(number)
    return out.done()


def _job(row: dict[str, str], number: int, raw: bytes, opts: ReadOptions,
         out: Collector) -> bool:
    """Map one record; False when it became a dead letter or was counted as skipped."""
    job = (row.get("jobid") or row.get("jobidraw") or "").strip()
    state_text = (row.get("state") or "").strip()
    if not job or not state_text:
        out.dead("record has no JobID or State", offset=number, raw=raw)
        return False
    if "." in job:
        out.skip("job steps (only allocations are job events)", line=number)
        return False
    state = state_text.split()[0].rstrip("+").upper()
    if state not in _FAILED | _ACTIVE | {"COMPLETED", "REQUEUED"}:
        out.dead(f"unknown job state {state_text!r}", offset=number, raw=raw)
        return False
    times: dict[str, int | None] = {}
    for column in ("submit", "start", "end"):
        if column not in row:
            times[column] = None
            continue
        value = _time(row[column], opts, out)
        if isinstance(value, str):
            out.dead(f"{column}: {value}", offset=number, raw=raw)
            return False
        times[column] = value
    exit_code = _exit_code(row.get("exitcode"))
    if isinstance(exit_code, str):
        out.dead(exit_code, offset=number, raw=raw)
        return False
    try:
        nodes = expand_hostlist(row.get("nodelist", ""))
    except ValueError as exc:
        out.dead(f"NodeList: {exc}", offset=number, raw=raw)
        return False
    vcluster = (row.get("partition") or row.get("cluster") or "").strip()
    submit, start, end = times["submit"], times["start"], times["end"]
    if submit is not None:
        out.event(c.JobSubmitted(job=job, gpus=_gpus(row), vcluster=vcluster), submit)
    if start is not None:
        out.event(c.JobStarted(job=job, step=0), start)
        if nodes:
            out.event(c.JobPlaced(job=job, nodes=nodes, vcluster=vcluster), start)
    if end is None or state in _ACTIVE:
        return True
    if state == "COMPLETED":
        out.event(c.JobCompleted(job=job, step=0), end)
    elif state == "REQUEUED":
        out.event(c.JobRestarted(job=job, from_step=0, nodes=[], reason=state), end)
    elif state == "CANCELLED":
        by = state_text.split(" by ", 1)[1].strip() if " by " in state_text else ""
        out.event(c.JobCancelled(job=job, step=0, by=by, reason=state_text), end)
    else:
        out.event(c.JobFailed(job=job, step=0, exit_code=exit_code, reason=state_text), end)
    return True
