"""What the benchmarks ran on, and how to watch a process: machine, versions, load, RSS, disk.

Everything here reads /proc and package metadata only (Linux), so it adds no dependency. The
machine may be shared: every benchmark records the load average when it starts, and process
trees are measured by their own resident memory, not by the machine's.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("kafka-python", "confluent-kafka", "quixstreams", "duckdb", "polars", "pyarrow",
            "numpy", "msgspec", "matplotlib")


def machine() -> dict[str, Any]:
    """Cores, memory, CPU model, kernel; the load average is per benchmark (``load()``)."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    return {
        "cores": os.cpu_count(), "cpu_model": model or platform.processor() or "unknown",
        "ram_gib": round(mem_kb / 2**20, 1), "kernel": platform.release(),
        "os": platform.platform(terse=True), "load_at_start": load(),
    }


def load() -> list[float]:
    """1, 5 and 15-minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


def versions() -> dict[str, str]:
    from fleetlog.ingest.kafka.broker import KAFKA_VERSION, cache_dir

    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    jar = cache_dir() / "libs" / f"kafka_2.13-{KAFKA_VERSION}.jar"
    out["kafka broker"] = KAFKA_VERSION + ("" if jar.exists() else " (jar not cached yet)")
    try:
        java = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False)
        out["java"] = (java.stderr or java.stdout).splitlines()[0].strip()
    except OSError:
        out["java"] = "not found"
    return out


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(_children(p))
    return out


def rss_mb(pid: int) -> float:
    """Resident memory of one process (MiB), 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def tree_rss_mb(pid: int) -> float:
    return sum(rss_mb(p) for p in tree(pid))


def every(every_s: float, stop: threading.Event, sample: Callable[[], None],
          name: str) -> threading.Thread:
    """Call ``sample`` now and every ``every_s`` on a daemon thread until ``stop`` is set."""

    def run() -> None:
        while not stop.is_set():
            sample()
            stop.wait(every_s)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


@dataclass
class RssSampler:
    """Samples the RSS of a process tree every ``every_s`` in a thread: (seconds, MiB) pairs."""

    pid: int
    every_s: float = 0.5
    samples: list[tuple[float, float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> RssSampler:
        started = time.monotonic()

        def sample() -> None:
            value = tree_rss_mb(self.pid)
            if value > 0:
                self.samples.append((round(time.monotonic() - started, 2), round(value, 1)))

        self._thread = every(self.every_s, self._stop, sample, "rss-sampler")
        return self

    def stop(self) -> list[tuple[float, float]]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self.samples

    @property
    def peak_mb(self) -> float:
        return max((mb for _t, mb in self.samples), default=0.0)


@dataclass
class DiskWatch:
    """The free space under ``folder`` every ``every_s`` in a thread, into ``into`` (GiB):
    ``start`` and ``lowest``. A broker whose disk fills stops and every later step fails, so
    the report says how close the run came."""

    folder: Path
    into: dict[str, float]
    every_s: float = 5.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self) -> None:
        try:
            free_gib = round(shutil.disk_usage(self.folder).free / 2**30, 1)
        except OSError:  # the folder is gone (deleted at the end of the run)
            return
        self.into.setdefault("start", free_gib)
        self.into["lowest"] = min(self.into.get("lowest", free_gib), free_gib)

    def start(self) -> DiskWatch:
        self._thread = every(self.every_s, self._stop, self.sample, "disk-watch")
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()


@dataclass
class Timed:
    """A finished subprocess: its output, wall time, CPU time and peak RSS of its tree."""

    stdout: str
    stderr: str
    returncode: int
    wall_s: float
    cpu_s: float
    peak_rss_mb: float  # sampled, whole process tree


def run_timed(command: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None,
              timeout_s: float = 3600.0, sample_every_s: float = 0.25) -> Timed:
    """Run ``command`` to completion, sampling its process tree's RSS."""
    before = os.times()
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    sampler = RssSampler(process.pid, every_s=sample_every_s).start()
    try:
        out, err = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        err += f"\n(benchmark: killed after {timeout_s:.0f} s)"
    wall = time.perf_counter() - started
    sampler.stop()
    after = os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system
                                                          - before.children_system)
    return Timed(out, err, process.returncode, round(wall, 3), round(cpu, 2),
                 round(sampler.peak_mb, 1))
