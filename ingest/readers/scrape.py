"""``fleetlog scrape``: a collector that polls live endpoints and publishes what it reads.

Sources: a dcgm-exporter ``/metrics`` URL (``--dcgm``) and/or the local ``nvidia-smi`` binary
(``--nvidia-smi``). Each poll's events carry the poll's wall-clock time (UTC). A poll that fails
(endpoint down, timeout, nvidia-smi error) is counted and reported, and the collector carries on:
one bad poll must not stop collection. Bad lines inside a scrape become dead letters.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from fleetlog.ingest import contract as c
from fleetlog.ingest.readers import inputs, nvidia_smi_csv, prometheus
from fleetlog.ingest.readers.base import ReadOptions, ReadResult, short, us_of_epoch
from fleetlog.ingest.readers.errors import ReaderError
from fleetlog.ingest.readers.sinks import open_sink

NVIDIA_SMI_FIELDS: Final = (
    "index,utilization.gpu,clocks.current.sm,temperature.gpu,temperature.memory,power.draw,"
    "memory.used,ecc.errors.corrected.volatile.total,ecc.errors.uncorrected.volatile.total,"
    "remapped_rows.pending,remapped_rows.failure,clocks_event_reasons.active"
)
_DURATION: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_S: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_interval(text: str) -> float:
    """``10s``, ``500ms``, ``1m``, ``2.5`` (seconds) -> seconds."""
    match = _DURATION.match(text)
    if match is None or float(match.group(1)) <= 0:
        raise ReaderError(f"interval {text!r}: write it as 10s, 500ms, 1m or a number of seconds")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


@dataclass
class ScrapeStats:
    polls: int = 0
    ok_polls: int = 0  # polls where at least one source answered (`fleetlog scrape` fails on 0)
    failed_polls: int = 0  # failures, one per source that failed in a poll
    last_error: str | None = None
    events: int = 0
    gpu_rows: int = 0
    dead_letters: int = 0
    per_source: dict[str, int] = field(default_factory=dict)


def _fetch(url: str, timeout_s: float) -> bytes:
    """The endpoint's answer, at most ``inputs.MAX_INPUT`` bytes (more: a failed poll)."""
    request = urllib.request.Request(url, headers={"Accept": "text/plain"})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        data: bytes = response.read(inputs.MAX_INPUT + 1)
        if len(data) > inputs.MAX_INPUT:
            raise OSError(f"the answer is larger than {inputs.size_text(inputs.MAX_INPUT)}, the "
                          "limit of one input")
        return data


def _run_nvidia_smi(binary: str, timeout_s: float) -> bytes:
    done = subprocess.run(
        [binary, f"--query-gpu={NVIDIA_SMI_FIELDS}", "--format=csv"],
        capture_output=True, timeout=timeout_s, check=False,
    )
    if done.returncode != 0:
        raise OSError(f"nvidia-smi exited {done.returncode}: "
                      f"{done.stderr.decode('utf-8', 'replace').strip()[:200]}")
    return done.stdout


def scrape(
    *, dcgm_url: str | None = None, nvidia_smi: bool = False, interval_s: float = 10.0,
    count: int | None = None, to: tuple[str, str], node: str | None = None,
    topic_prefix: str | None = None, progress: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Poll the sources every ``interval_s`` (``count`` times, or until interrupted)."""
    if not dcgm_url and not nvidia_smi:
        raise ReaderError("nothing to scrape: give --dcgm URL and/or --nvidia-smi")
    if dcgm_url and not dcgm_url.startswith(("http://", "https://")):
        raise ReaderError(f"--dcgm {dcgm_url!r}: give an http:// or https:// URL")
    binary = shutil.which("nvidia-smi") if nvidia_smi else None
    if nvidia_smi and binary is None:
        raise ReaderError("nvidia-smi is not on PATH here: run the collector on a GPU node, "
                          "or scrape dcgm-exporter with --dcgm URL")
    local_node = node or socket.gethostname()
    stats = ScrapeStats()
    timeout_s = max(1.0, min(interval_s, 30.0))
    sink = open_sink(to=to, topic_prefix=topic_prefix)
    try:
        while count is None or stats.polls < count:
            started = clock()
            now_us = us_of_epoch(started)
            results: list[ReadResult] = []
            if dcgm_url:
                try:
                    data = _fetch(dcgm_url, timeout_s)
                    results.append(prometheus.parse(
                        data, origin=dcgm_url, opts=ReadOptions(node=node),
                        default_time_us=now_us))
                except (urllib.error.URLError, OSError, TimeoutError, ReaderError) as exc:
                    stats.failed_polls += 1
                    stats.last_error = short(f"{dcgm_url}: {exc}")
            if binary:
                try:
                    data = _run_nvidia_smi(binary, timeout_s)
                    results.append(nvidia_smi_csv.parse(
                        data, origin="nvidia-smi", opts=ReadOptions(node=local_node),
                        default_time_us=now_us))
                except (OSError, subprocess.SubprocessError, ReaderError) as exc:
                    stats.failed_polls += 1
                    stats.last_error = short(f"nvidia-smi: {exc}")
            for result in results:
                sink.write(result.events, result.dead)
                stats.events += len(result.events)
                stats.dead_letters += len(result.dead)
                stats.gpu_rows += sum(e.payload.rows for e in result.events
                                      if isinstance(e.payload, c.GpuSampled))
                stats.per_source[result.format] = (
                    stats.per_source.get(result.format, 0) + len(result.events))
            stats.polls += 1
            stats.ok_polls += bool(results)
            if progress:
                progress(f"poll {stats.polls} at {datetime.fromtimestamp(started, UTC):%H:%M:%S}"
                         f": {sum(len(r.events) for r in results)} events"
                         + (f" (last error: {stats.last_error})" if stats.last_error else ""))
            if count is not None and stats.polls >= count:
                break
            sleep(max(0.0, interval_s - (clock() - started)))
    finally:
        sink.close()
    summary: dict[str, Any] = {"target": sink.target, **vars(stats)}
    if sink.target.startswith("duckdb"):
        summary["landed_new"] = sink.totals.events
    return summary
