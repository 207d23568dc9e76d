"""The building blocks every category's symptom steps share: times, draws from a ``Shape``,
counter precursors, repair times (docs/faults.md is the contract).

Draws come from the seed's fault stream (``sim.rng_fault``), so a seed gives the same run; a
fixed range or a certain share draws nothing (``shapes``). Onsets of sample-borne symptoms are
the first scrape that shows them (``sim.next_tick``); event-borne ones are the event's time.
Precursor durations are shortened (never below the range's low end) to fit a short window.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import numpy as np

from fleetlog.generators.faults import REPAIR_CLIP_H, REPAIR_HOURS, REPAIR_LOGNORMAL, Fault
from fleetlog.generators.shapes import Shape
from fleetlog.generators.telemetry import Overlay
from fleetlog.generators.world import World

BURSTS: Final = (2, 6)  # a bursty precursor: how many bursts, and scrapes each
BURST_SCRAPES: Final = (1, 4)

Step = Callable[[World, Fault, Shape], None]  # one category's steps


def us(seconds: float) -> int:
    return round(seconds * 1_000_000)


def between(sim: World, lo_s: float, hi_s: float) -> int:
    return us(float(sim.rng_fault.uniform(lo_s, hi_s)))


def draw(sim: World, shape: Shape, category: str, knob: str) -> float:
    return shape.draw(sim.rng_fault, category, knob)


def draw_rates(sim: World, shape: Shape, category: str, knobs: tuple[str, str]
           ) -> tuple[float, float]:
    """A precursor's rate at its start and end, per scrape."""
    dt = sim.config.interval_s
    start = shape.rate(sim.rng_fault, category, knobs[0], dt)
    return start, shape.rate(sim.rng_fault, category, knobs[1], dt)


def lead_us(sim: World, shape: Shape, category: str, knob: str) -> int:
    """A precursor's duration: the documented range, cut to half the window left (never below
    the range's low end)."""
    r = shape.ranges[category][knob]
    lo = r.lo * r.scale
    room = (sim.config.end_us - sim.now_us) / 1e6 * 0.5
    return us(float(sim.rng_fault.uniform(lo, max(lo, min(r.hi * r.scale, room)))))


def repair_time(sim: World, fault: Fault, t_us: int) -> int:
    if fault.category in REPAIR_HOURS:
        lo, hi = REPAIR_HOURS[fault.category]
        return t_us + between(sim, lo * 3600, hi * 3600)
    mu, sigma = REPAIR_LOGNORMAL[fault.category]
    hours = min(max(float(sim.rng_fault.lognormal(mu, sigma)), REPAIR_CLIP_H[0]), REPAIR_CLIP_H[1])
    return t_us + us(hours * 3600)


def indices(*items: int) -> np.ndarray[tuple[int], np.dtype[np.intp]]:
    return np.asarray(items, dtype=np.intp)


def jitter(sim: World) -> int:
    """Puts an event between two scrapes."""
    return between(sim, 0.5, sim.config.interval_s - 0.5)


def add_note(shape: Shape | None, f: Fault, text: str) -> None:
    """Add to the truth's ``detail`` how this fault was shaped (``xid48: no precursor, ...``),
    where the shape varies per fault."""
    if shape is not None and shape.notes:
        f.detail = f"{f.detail}, {text}" if f.detail else f"{f.variant}: {text}"


def precursor(sim: World, f: Fault, shape: Shape, kind: str, column: str, index: int,
               t0: int, t1: int, rates: tuple[float, float], *, note: bool = True) -> None:
    """A counter rising on one GPU (``counter``) or port (``port_counter``) from ``t0`` to
    ``t1``: a ramp from ``rates[0]`` to ``rates[1]`` per scrape, or (in a share) 2-6 bursts.
    A ramp of at least one per scrape shows in every scrape; a slower one (a trickle) skips
    scrapes, and then its first scrape is made to show one: the onset the truth names.
    ``note``: say its shape in the truth's detail (once per fault, not per port or burst)."""
    where = indices(index)
    shown = shape if note else None
    if shape.chance(sim.rng_fault, "bursty") and t1 > t0:
        sim.tel.add(Overlay(f, kind, where, t0, t0, column=column))
        count = int(sim.rng_fault.integers(BURSTS[0], BURSTS[1] + 1))
        dt = sim.config.interval_s
        for at in np.sort(sim.rng_fault.integers(t0, t1, size=count)).tolist():
            tb = sim.next_tick(int(at))
            scrapes = int(sim.rng_fault.integers(BURST_SCRAPES[0], BURST_SCRAPES[1] + 1))
            rate = max(1.0, rates[1] * 5)
            sim.tel.add(Overlay(f, kind, where, tb, tb + us(scrapes * dt), column=column,
                                rate0=rate, rate1=rate))
        add_note(shown, f, f"{column} in {count} bursts over {(t1 - t0) / 6e7:.1f} min")
    else:
        trickle = min(rates) < 1.0
        if trickle:
            sim.tel.add(Overlay(f, kind, where, t0, t0, column=column))
        sim.tel.add(Overlay(f, kind, where, t0, t1, column=column, rate0=rates[0],
                            rate1=rates[1], floor=0 if trickle else 1))
        per_hour = 3600.0 / sim.config.interval_s
        add_note(shown, f, f"{column} {rates[0] * per_hour:.0f} -> {rates[1] * per_hour:.0f} per "
                        f"hour over {(t1 - t0) / 6e7:.1f} min")
    f.symptom(t0)


def at_or_now(sim: World, t_us: int, action: Callable[[], None]) -> None:
    """``action`` now if ``t_us`` is now, else at ``t_us``."""
    if t_us <= sim.now_us:
        action()
    else:
        sim.at(t_us, action)
