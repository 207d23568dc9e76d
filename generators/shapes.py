"""Documented ranges that fault shapes are drawn from: one value per fault, from the seed.

A ``Range`` holds its bounds in the unit docs/faults.md quotes (minutes, °C, %, per hour...) and
the factor that turns them into the unit the code works in (seconds, a fraction, per scrape), so
the tables in ``template``, ``wide``, ``failslow`` and ``confounders`` are the documentation's
numbers, and ``tests/generators/test_sim_shape_docs.py`` checks that the doc quotes every one of
the wide, fail-slow and confounder ones (``Range.doc``).

A ``Shape`` is one way every category's faults look: a table of ranges per category and the
shares of yes/no choices (a precursor missing, coming in bursts...). ``symptoms`` runs each
category's steps against a shape: the template (``template.TEMPLATE``, the default) or the wide
one (``wide.WIDE``, ``--shapes wide``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import numpy as np

# units counted in whole numbers: drawn with ``integers``, bounds included
COUNT_UNITS: Final = ("flaps", "reports", "nodes")


@dataclass(frozen=True)
class Range:
    lo: float
    hi: float
    unit: str = ""
    scale: float = 1.0  # code units per documented unit (e.g. 60 for minutes -> seconds)

    def draw(self, rng: np.random.Generator) -> float:
        """One value between the bounds, in code units: uniform, or log-uniform for a range of
        rates "per hour" (spanning decades, where uniform would almost never draw the low end),
        or a whole number for a count. A fixed value (``lo == hi``) draws nothing, so a table
        that fixes a knob leaves the seed's stream as it was."""
        if self.lo == self.hi:
            return self.lo * self.scale
        if self.unit in COUNT_UNITS:
            return float(rng.integers(int(self.lo), int(self.hi) + 1)) * self.scale
        if self.unit == "per hour" and self.lo > 0:
            return float(np.exp(rng.uniform(np.log(self.lo), np.log(self.hi)))) * self.scale
        return float(rng.uniform(self.lo, self.hi)) * self.scale

    def doc(self) -> str:
        """How docs/faults.md writes it: ``25–40 %``, ``0–5 min``."""
        text = f"{self.lo:g}–{self.hi:g}"
        return f"{text} {self.unit}" if self.unit else text


def chance(rng: np.random.Generator, share: float) -> bool:
    """True with probability ``share`` (a drawn yes/no of a fault's shape)."""
    return bool(rng.random() < share)


@dataclass(frozen=True)
class Shape:
    """The ranges (per category, per knob) and shares a category's symptom steps draw from.

    ``notes``: write how each fault was shaped into its truth record's ``detail`` (the wide
    shapes vary per fault, so the detail says which draw a detection missed)."""

    name: str
    ranges: Mapping[str, Mapping[str, Range]]
    shares: Mapping[str, float]
    notes: bool = False

    def has(self, category: str, knob: str) -> bool:
        return knob in self.ranges.get(category, {})

    def draw(self, rng: np.random.Generator, category: str, knob: str) -> float:
        return self.ranges[category][knob].draw(rng)

    def rate(self, rng: np.random.Generator, category: str, knob: str,
             interval_s: float) -> float:
        """A drawn rate, per scrape (ranges quote "per hour" or "per scrape")."""
        r = self.ranges[category][knob]
        value = r.draw(rng)
        return value * interval_s / 3600.0 if r.unit == "per hour" else value

    def chance(self, rng: np.random.Generator, share: str) -> bool:
        """A drawn yes/no; a share the shape does not give (or gives as 0 or 1) draws nothing."""
        p = self.shares.get(share, 0.0)
        if p <= 0.0 or p >= 1.0:
            return p >= 1.0
        return chance(rng, p)
