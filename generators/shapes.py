"""Documented ranges that fault shapes are drawn from: one value per fault, from the seed.

A ``Range`` holds its bounds in the unit docs/faults.md quotes (minutes, °C, %, per hour...) and
the factor that turns them into the unit the code works in (seconds, a fraction, per scrape), so
the tables in ``failslow``, ``wide`` and ``confounders`` are the documentation's numbers, and
``tests/generators/test_sim_shape_docs.py`` checks that the doc quotes every one of them
(``Range.doc``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Range:
    lo: float
    hi: float
    unit: str = ""
    scale: float = 1.0  # code units per documented unit (e.g. 60 for minutes -> seconds)

    def draw(self, rng: np.random.Generator) -> float:
        """One value between the bounds, in code units: uniform, or log-uniform for a range of
        rates "per hour" (spanning decades, where uniform would almost never draw the low end)."""
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
