"""Run a simulation into a sink, as fast as possible or paced to the wall clock.

``simulate(config, "duckdb:fleet.duckdb")`` is what ``fleetlog simulate`` (and the demo's embedded
mode) calls. ``speed`` 0 runs flat out; 1 is real time; 60 plays a simulated minute per second.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fleetlog.generators.config import SimConfig
from fleetlog.generators.simulator import Simulator
from fleetlog.generators.sinks import open_sink
from fleetlog.ingest.contract import Sink


def simulate(
    config: SimConfig,
    target: str | tuple[str, str] | Sink,
    *,
    speed: float = 0.0,
    topic_prefix: str | None = None,
    progress: Callable[[int, int], Any] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Run ``config`` into ``target`` (a URI, (scheme, rest), or any ``Sink``); return the
    summary."""
    sim = Simulator(config)
    sink = open_sink(target, topic_prefix=topic_prefix) if isinstance(target, str | tuple) \
        else target
    started = clock()
    try:
        for chunk in sim.chunks():
            sink.write(chunk)
            if speed > 0:
                due = (sim.now_us - config.start_us) / 1e6 / speed
                ahead = due - (clock() - started)
                if ahead > 0:
                    sleep(ahead)
            if progress is not None:
                progress(sim.stats.ticks, config.ticks)
    finally:
        sink.close()
    wall = clock() - started
    summary = sim.summary()
    summary.update(sink.describe())
    summary["wall_s"] = round(wall, 3)
    summary["gpu_samples_per_s"] = round(sim.stats.gpu_samples / wall) if wall > 0 else None
    summary["events_per_s"] = round(sim.stats.events / wall) if wall > 0 else None
    return summary
