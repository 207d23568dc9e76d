"""The wide symptom shapes (``--shapes wide``): each fault's shape drawn from documented ranges.

The template (``template``) gives every fault of a category one look, the one the detectors were
written from. Real faults vary: a precursor ramps in seconds or hours, arrives in bursts or as a
trickle, or is missing; the kernel's XID line arrives after the samples already show the GPU
gone; a rack's GPUs warm unevenly; a node takes minutes to be declared down; a leaf switch's
ports die over minutes, not in one scrape; a hang starts with a slow rank and ends without the
watchdog's line; a software crash follows a loss spike, a stall or a slowdown. Here each fault
draws its shape from ``RANGES`` and ``SHARES`` (quoted by
docs/faults.md#symptom-shapes-template-and-wide), from the fault stream of the seed, so a seed
stays deterministic. The steps are the template's (``symptoms``), run against ``WIDE``.
"""

from __future__ import annotations

from typing import Final

from fleetlog.generators.shapes import Range, Shape

RANGES: Final[dict[str, dict[str, Range]]] = {
    "gpu_hw": {
        "crc_lead": Range(0.2, 30, "min", 60),  # NVLink CRC errors before XID 74
        "crc_start": Range(30, 3600, "per hour"),
        "crc_end": Range(600, 100000, "per hour"),
        "pcie_lead": Range(0.5, 10, "min", 60),  # PCIe replays before some XID 79
        "pcie_start": Range(30, 600, "per hour"),
        "pcie_end": Range(600, 20000, "per hour"),
        "xid_late": Range(10, 180, "s"),  # the XID line after the samples show it
        "fail_after": Range(1, 120, "s"),
    },
    "gpu_hbm": {
        "lead": Range(2, 120, "min", 60),
        "sbe_start": Range(10, 1000, "per hour"),
        "sbe_end": Range(200, 30000, "per hour"),
        "pending_at": Range(20, 95, "% of the lead", 0.01),
        "fail_after": Range(0.5, 60, "s"),
    },
    "gpu_sram": {
        "lead": Range(0.5, 30, "min", 60),
        "errors_start": Range(10, 1000, "per hour"),
        "errors_end": Range(200, 20000, "per hour"),
        "fail_after": Range(0.5, 60, "s"),
    },
    "gpu_gsp": {
        "idle_lag": Range(0, 60, "s"),  # the GPU goes idle after the XID
        "fail_after": Range(5, 180, "s"),
    },
    "gpu_thermal": {
        "ramp": Range(1, 40, "min", 60),
        "rise": Range(6, 35, "°C"),
        "clock_drop": Range(10, 50, "%", 0.01),
        "throttle_lag": Range(0, 5, "min", 60),  # throttling after the ramp's end
    },
    "cooling": {
        "ramp": Range(5, 60, "min", 60),
        "rise": Range(4, 25, "°C"),
        "spread": Range(50, 100, "% of the rise", 0.01),  # each node's share of the rise
        "clock_drop": Range(5, 30, "%", 0.01),
        "throttle_lag": Range(0, 10, "min", 60),
    },
    "sdc": {
        # each bad step's loss is the true loss times a factor between these two (drawn per
        # fault: a barely visible drift or an explosion); NaN in the "nan" variant
        "factor_low": Range(1.2, 5, "×"),
        "factor_high": Range(1.5, 50, "×"),
        "reports": Range(1, 20, "reports"),  # bad step reports before a check fails the job
        "ramp": Range(1, 10, "reports"),  # the factor reached over this many reports
        "hint_lead": Range(0.5, 10, "min", 60),  # a few SRAM corrections before (a share)
    },
    "software": {
        "lead": Range(0.2, 15, "min", 60),  # a precursor before the exception (a share)
        "spike": Range(1.5, 20, "× the loss"),
        "slowdown": Range(10, 200, "%", 0.01),
    },
    "nccl_hang": {
        "slow_lead": Range(0.5, 15, "min", 60),  # some ranks slower before the hang (a share)
        "slow_nodes": Range(1, 3, "nodes"),
        "slowdown": Range(5, 50, "%", 0.01),
        "timeout": Range(5, 30, "min", 60),  # PyTorch's NCCL timeout: 10 min default, 30 min
    },
    "network": {
        "lead": Range(0.2, 60, "min", 60),  # cable: errors before the first flap
        "symbol_start": Range(10, 1000, "per hour"),
        "symbol_end": Range(100, 50000, "per hour"),
        "recovery_start": Range(0.5, 50, "per hour"),  # link error recoveries (a share)
        "recovery_end": Range(5, 2500, "per hour"),
        "flaps": Range(1, 8, "flaps"),
        "flap_gap": Range(10, 120, "s"),
        "down": Range(15, 120, "s"),  # each flap
        "slowdown": Range(1, 1.5, "× step time"),  # of the attached job, while the errors last
        "fail_after": Range(5, 20, "s"),
        "switch_lead": Range(0.5, 30, "min", 60),  # a leaf's symbol errors before it dies
        "switch_symbol_start": Range(10, 1000, "per hour"),
        "switch_symbol_end": Range(100, 20000, "per hour"),
        "switch_ports": Range(10, 100, "% of its node ports", 0.01),  # that show the errors
        "switch_stagger": Range(5, 240, "s"),  # its ports go down within it (a share)
        "switch_fail_after": Range(5, 30, "s"),
    },
    "nic": {
        "lead": Range(1, 120, "min", 60),
        "errors_start": Range(5, 600, "per hour"),
        "errors_end": Range(18, 20000, "per hour"),
        "fail_after": Range(5, 60, "s"),
    },
    "host_maintenance": {"fail_after": Range(5, 30, "s"), "down_after": Range(0.5, 15, "min", 60)},
    "host_hw": {
        "down_after": Range(0.5, 10, "min", 60),  # node.went_down after the samples stop
        "fail_after": Range(10, 120, "s"),
    },
    "rack_power": {"stagger": Range(0, 30, "s"),  # the nodes go dark within it
                   "fail_after": Range(10, 40, "s")},
    "storage": {"slowdown": Range(2, 30, "×")},
}
SHARES: Final = {
    "precursor_missing": 0.25,  # an ECC/CRC/error precursor that never shows
    "bursty": 0.35,  # a precursor that comes in 2-6 bursts instead of a ramp
    "xid_late": 0.3,  # the XID line after the samples show the GPU gone, idle or its DBE
    "xid79_pcie_precursor": 0.3,  # PCIe replays before a GPU falls off the bus
    "remap_pending_missing": 0.3,
    "cable_recovery_errors": 0.6,  # a flapping cable also counts link error recoveries
    "hw_thermal": 0.4,  # a thermal fault sets the HW thermal bit (else SW thermal only)
    "sdc_sram_hint": 0.3,  # a few corrected SRAM errors on one of the job's GPUs first
    "software_loss_spike": 0.2,  # the loss spikes before the exception
    "software_stall": 0.2,  # the ranks stall (spinning in a collective) before it
    "software_slowdown": 0.2,  # the steps slow down before it (memory pressure, a leak)
    "hang_slow_nodes": 0.5,  # some ranks run slower before the collective hangs
    "hang_no_timeout_line": 0.3,  # the job is killed without the watchdog's line
    "switch_precursor": 0.4,  # symbol errors on the leaf's ports before it dies
    "switch_staggered": 0.5,  # its ports go down over a drawn stagger, not in one scrape
}
WIDE: Final = Shape("wide", RANGES, SHARES, notes=True)
