"""The template symptom shapes (the default, ``--shapes template``): one look per category.

Each category's faults draw their times and rates from the narrow ranges of docs/faults.md's
per-category table, the shape the detectors were written from; the tests pin the stream they
make (``tests/generators/test_sim_determinism.py``). Nothing is left to chance: no precursor is
missing, none comes in bursts, no XID line is late. A fixed value (``lo == hi``) draws nothing
from the seed, so these tables keep the exact stream the template always made. Units are the
code's own (seconds, per scrape, fractions): the ranges are docs/faults.md's, converted.
"""

from __future__ import annotations

from typing import Final

from fleetlog.generators.shapes import Range, Shape


def _s(lo: float, hi: float) -> Range:
    return Range(lo, hi, "s")


def _fixed(value: float, unit: str) -> Range:
    return Range(value, value, unit)


RANGES: Final[dict[str, dict[str, Range]]] = {
    "gpu_hw": {"crc_lead": _s(60, 300), "crc_start": _fixed(5, "per scrape"),
               "crc_end": _fixed(300, "per scrape"), "fail_after": _s(1, 30)},
    "gpu_hbm": {"lead": _s(600, 3600), "sbe_start": Range(1, 3, "per scrape"),
                "sbe_end": Range(20, 80, "per scrape"),
                "pending_at": Range(0.5, 0.8, "of the lead"), "fail_after": _s(0.5, 5)},
    "gpu_sram": {"lead": _s(120, 600), "errors_start": _fixed(2, "per scrape"),
                 "errors_end": _fixed(40, "per scrape"), "fail_after": _s(0.5, 5)},
    "gpu_gsp": {"idle_lag": _fixed(0, "s"), "fail_after": _s(10, 60)},
    "gpu_thermal": {"ramp": _s(300, 900), "rise": Range(10, 25, "°C"),
                    "clock_drop": Range(0.2, 0.4, "of the clock"), "throttle_lag": _fixed(0, "s"),
                    "hw_above": _fixed(18, "°C")},  # the HW thermal bit above this rise
    "cooling": {"ramp": _s(600, 1800), "rise": Range(8, 20, "°C"),
                "clock_drop": Range(0.1, 0.25, "of the clock"), "throttle_lag": _fixed(0, "s")},
    "sdc": {"factor_low": _fixed(3, "×"), "factor_high": _fixed(10, "×"),
            "reports": Range(2, 4, "reports"), "ramp": _fixed(1, "reports")},
    "network": {"lead": _s(120, 600), "symbol_start": _fixed(2, "per scrape"),
                "symbol_end": _fixed(60, "per scrape"), "recovery_start": _fixed(1, "per scrape"),
                "recovery_end": _fixed(3, "per scrape"), "flaps": Range(3, 6, "flaps"),
                "flap_gap": _s(10, 60), "down": _fixed(15, "s"),
                "slowdown": Range(1.1, 1.4, "× step time"), "fail_after": _s(5, 20),
                "switch_stagger": _fixed(0, "s"), "switch_fail_after": _s(5, 30)},
    "nic": {"lead": _s(60, 300), "errors_start": _fixed(2, "per scrape"),
            "errors_end": _fixed(50, "per scrape"), "fail_after": _s(5, 30)},
    "host_maintenance": {"fail_after": _s(5, 30), "down_after": _s(60, 300)},
    "host_hw": {"fail_after": _s(30, 60), "down_after": _s(60, 90)},
    "rack_power": {"stagger": _fixed(0, "s"), "fail_after": _s(10, 40)},
    "storage": {"slowdown": Range(5, 20, "×")},
}
# every yes/no of the template is fixed: a cable always counts link error recoveries
SHARES: Final = {"cable_recovery_errors": 1.0}

TEMPLATE: Final = Shape("template", RANGES, SHARES)
