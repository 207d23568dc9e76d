"""Parameters of one simulation run, validated once, and the package's root exception.

Everything that shapes the event stream lives in ``SimConfig``; two runs with equal configs emit
byte-identical streams. ``run_tag`` folds the config into the event ids, so runs with different
parameters never collide in a store that deduplicates by id.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Final

import numpy as np

from fleetlog.ingest.contract.errors import FleetlogError

# how faults look: docs/faults.md#symptom-shapes-template-and-wide
SHAPES: Final = ("template", "wide")
DEFAULT_START: Final = datetime(2026, 1, 5, tzinfo=UTC)
SOURCE: Final = "fleetlog-sim"


class SimulationError(FleetlogError):
    """A simulation cannot run as asked; the message says what to change."""


@dataclass(frozen=True)
class SimConfig:
    nodes: int = 64
    hours: float = 1.0
    seed: int = 0
    scenario: str = "llama3"
    fault_rate: float = 1.0  # multiplier on the base hazard
    base_hazard: float = 5e-3  # job-interrupting failures per 8-GPU node-day
    interval_s: float = 10.0  # GPU and port scrape cadence
    start: datetime = DEFAULT_START
    gpus_per_node: int = 8
    nodes_per_rack: int = 4
    racks_per_su: int = 8  # racks under one set of rail leaf switches (a scalable unit)
    spines: int | None = None  # per region; None = min(8, max(2, SUs in the region))
    regions: int = 1
    vclusters: int | None = None  # None = min(2, racks)
    spare_share: float = 0.05
    restart_overhead_s: float = 600.0
    nccl_timeout_s: float = 600.0
    shapes: str = "template"

    def __post_init__(self) -> None:
        checks = [
            (self.nodes >= 1, f"--nodes must be at least 1 (got {self.nodes})"),
            (self.hours > 0, f"--hours must be positive (got {self.hours})"),
            (self.seed >= 0, f"--seed must be 0 or more (got {self.seed})"),
            (self.fault_rate >= 0, f"--fault-rate must be 0 or more (got {self.fault_rate})"),
            (self.base_hazard >= 0, "the base hazard must be 0 or more"),
            (self.interval_s >= 1, f"--interval must be at least 1 s (got {self.interval_s})"),
            (1 <= self.gpus_per_node <= 16,
             f"--gpus-per-node must be 1..16 (got {self.gpus_per_node})"),
            (self.nodes_per_rack >= 1, "--nodes-per-rack must be at least 1"),
            (self.racks_per_su >= 1, "--racks-per-su must be at least 1"),
            (self.spines is None or self.spines >= 1, "--spines must be at least 1"),
            (self.regions >= 1, "--regions must be at least 1"),
            (self.vclusters is None or self.vclusters >= 1, "--vclusters must be at least 1"),
            (0 <= self.spare_share < 0.5, "the spare share must be in [0, 0.5)"),
            (self.start.tzinfo is not None, "--start needs a time zone (e.g. ...Z)"),
            (self.shapes in SHAPES, f"--shapes must be one of {', '.join(SHAPES)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise SimulationError(message)

    @property
    def interval_us(self) -> int:
        return round(self.interval_s * 1_000_000)

    @property
    def start_us(self) -> int:
        return int(self.start.timestamp()) * 1_000_000 + self.start.microsecond

    @property
    def ticks(self) -> int:
        """Number of scrapes: at start, start + interval, ... (end exclusive)."""
        return max(1, -(-round(self.hours * 3600 * 1_000_000) // self.interval_us))

    @property
    def end_us(self) -> int:
        return self.start_us + self.ticks * self.interval_us

    def run_tag(self) -> str:
        """Short, stable digest of every parameter: part of each event id. ``shapes`` counts only
        when it is not the template, so the runs made before it existed keep their ids."""
        params = asdict(self)
        if params["shapes"] == "template":
            del params["shapes"]
        text = repr(sorted((k, repr(v)) for k, v in params.items()))
        return hashlib.blake2b(text.encode(), digest_size=4).hexdigest()


RandomState = int | np.random.Generator | None


def check_random_state(random_state: RandomState) -> np.random.Generator:
    """scikit-learn's convention: an int seeds a new Generator, a Generator is used as is."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    return np.random.default_rng(random_state)
