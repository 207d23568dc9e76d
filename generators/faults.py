"""Fault taxonomy, hazard and scenarios: *which* faults happen *when* (``symptoms`` says how).

The calibrated mix is Table 5 of the Llama 3 paper (419 unexpected interruptions of a 16,384-GPU
job in 54 days). Random faults arrive as a Poisson process: ``base_hazard × fault_rate`` per 8-GPU
node-day, split over categories by the scenario's weights. Scripted faults (the named scenarios)
happen at fixed fractions of the window, optionally "near" an earlier scripted fault (same scalable
unit), so several faults overlap in time and topology.

``plan_faults`` is a pure function of the config and a seed: the plan is drawn before the
simulation starts, and the simulator injects every planned fault (deferring one whose target does
not exist yet, e.g. a job fault while no job runs). A ``Fault`` is one of them once injected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from fleetlog.generators.config import RandomState, SimConfig, SimulationError, check_random_state
from fleetlog.ingest.contract import ALL_CATEGORIES, FAULT_CATEGORIES

# Llama 3 405B pre-training, Table 5 (counts are the reliable column).
LLAMA3_COUNTS: Final = {
    "gpu_hw": 148, "gpu_hbm": 72, "software": 56, "network": 35, "host_maintenance": 32,
    "gpu_sram": 19, "gpu_gsp": 17, "host_hw": 14, "nccl_hang": 7, "nic": 7, "gpu_thermal": 6,
    "sdc": 6,
}
assert set(LLAMA3_COUNTS) == set(FAULT_CATEGORIES)

# How each category shows up (docs/faults.md), with the share of each variant.
VARIANTS: Final[dict[str, tuple[tuple[str, float], ...]]] = {
    "gpu_hw": (("xid79", 0.45), ("nvlink_xid74", 0.25), ("xid62", 0.2), ("xid45", 0.1)),
    "gpu_hbm": (("xid48", 0.5), ("xid63_64", 0.25), ("xid94", 0.1), ("xid95", 0.1),
                ("xid140", 0.05)),
    "gpu_sram": (("xid94", 0.6), ("xid95", 0.4)),
    "gpu_gsp": (("xid119", 0.6), ("xid120", 0.4)),
    "gpu_thermal": (("ramp", 1.0),),
    "sdc": (("nan", 0.5), ("spike", 0.5)),
    "software": (("runtime_error", 0.4), ("oom", 0.3), ("import_error", 0.15),
                 ("segfault", 0.15)),
    "nccl_hang": (("watchdog", 1.0),),
    "network": (("cable", 0.8), ("switch", 0.2)),
    "nic": (("hca", 1.0),),
    "host_maintenance": (("reboot", 1.0),),
    "host_hw": (("unreachable", 1.0),),
    "rack_power": (("pdu", 1.0),),
    "cooling": (("rack", 1.0),),
    "storage": (("slow_writes", 1.0),),
}
assert set(VARIANTS) == set(ALL_CATEGORIES)

# Fail-slow (gray) kinds, by the category of the part at fault (docs/faults.md#fail-slow): drawn
# only by the failslow scenarios, so the calibrated mix above keeps its shapes.
FAILSLOW_KINDS: Final = {
    "clock_drop": "gpu_hw", "power_cap": "host_hw", "pcie_degraded": "gpu_hw",
    "port_bandwidth": "network", "nvlink_bandwidth": "gpu_hw", "node_network": "host_hw",
}
# The ``failslow`` family's rounds: each kind twice, a round after another. Kinds added later
# come in a round of their own after the first, so the first round's faults keep their times
# and draws on every seed (the family's results stay comparable across versions).
FAILSLOW_ROUNDS: Final = (
    ("clock_drop", "power_cap", "pcie_degraded", "port_bandwidth", "nvlink_bandwidth"),
    ("node_network",),
)
FAILSLOW_SUMMARY: Final = {
    "clock_drop": "one GPU's SM clock and power drop 25-40 % with no throttle bit or XID, util "
                  "stays high, its job slows",
    "power_cap": "every GPU of one node held at a 300-500 W power cap and a lower clock, a "
                 "power-brake/HW-slowdown bit or none",
    "pcie_degraded": "PCIe replays rising on one GPU, its job 3-15 % slower",
    "port_bandwidth": "one NIC port's transmit/receive data rates at 40-60 %, no error counter, "
                      "its job slower",
    "nvlink_bandwidth": "one GPU's NVLink degraded: power down at full clock, its job slower, "
                        "maybe a trickle of CRC errors",
    "node_network": "every NIC port of one node at 40-65 % of its data rate (its PCIe path or "
                    "NIC mode), no error counter, its job slower",
}
assert set(FAILSLOW_SUMMARY) == set(FAILSLOW_KINDS)
assert sorted(k for r in FAILSLOW_ROUNDS for k in r) == sorted(FAILSLOW_KINDS)

# Time to repair (out of service until back, hours): lognormal (mu, sigma of ln hours) fitted on
# the real InfiniteHBD trace (584 node faults on 400 servers over 345 days; median 20.4 h, mean
# 133 h) by ``bench/repair_times.py``, for the categories it labels 20 times or more. Draws are
# kept within REPAIR_CLIP_H: under 15 min is no repair, and a part never waits more than 60 days.
REPAIR_LOGNORMAL: Final = {
    "gpu_hbm": (1.494, 3.101), "gpu_hw": (2.321, 2.763), "host_hw": (4.498, 1.647),
    "network": (3.619, 1.741), "nic": (2.078, 3.407),
}
REPAIR_CLIP_H: Final = (0.25, 60 * 24.0)
# The categories the trace does not label (or too rarely to fit): uniform over hours, a guess
# (a GPU reset, a reboot, a PDU or a cooling unit fixed, storage recovered).
REPAIR_HOURS: Final = {
    "gpu_sram": (0.5, 2.0), "gpu_gsp": (0.25, 1.0), "gpu_thermal": (2.0, 8.0),
    "host_maintenance": (0.25, 1.0), "rack_power": (0.5, 2.0), "cooling": (1.0, 3.0),
    "storage": (1.0, 3.0),
}
assert not set(REPAIR_LOGNORMAL) & set(REPAIR_HOURS)


@dataclass(frozen=True)
class Scripted:
    """A fault a scenario always injects: at ``at`` (fraction of the window)."""

    at: float
    category: str
    variant: str | None = None  # None: drawn from VARIANTS
    near: int | None = None  # index of an earlier scripted fault: pick a target in its SU


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    weights: dict[str, float] = field(default_factory=dict)  # random faults; empty = none
    scripted: tuple[Scripted, ...] = ()
    migrations: tuple[float, ...] = ()  # fractions of the window at which a migration is asked
    confounders: bool = False  # benign look-alikes of faults (generators.confounders)


@dataclass(frozen=True)
class PlannedFault:
    at_us: int
    category: str
    variant: str
    scripted: int | None = None  # index in the scenario's scripted list
    near: int | None = None


@dataclass(eq=False)
class Fault:
    """A planned fault once injected: its target, and the ground truth it collects.

    ``start_us`` is the earliest symptom (``symptom(t)``), ``affected`` every entity that showed
    one (``touch``); the injector reports them when the fault is over. The target is held as
    indices (-1: none), the job by its slot in the scheduler's list, so this record needs nothing
    of the parts that act on it (it sits below them all, ``Job`` included).
    """

    fault_id: str
    category: str
    variant: str
    entity: str
    scenario: str
    planned: PlannedFault
    su: int = -1  # scalable unit of the root (for "near" faults), -1 if none
    nodes: list[int] = field(default_factory=list)  # nodes held while the fault is open
    gpu: int = -1
    node: int = -1
    port: int = -1
    leaf: int = -1
    rack: int = -1
    vc: int = -1
    job: int = -1  # slot of the target job (job categories)
    start_us: int | None = None
    end_us: int | None = None
    affected: dict[str, None] = field(default_factory=dict)
    detail: str = ""
    hold: int = 0  # symptoms still to come (e.g. slowed checkpoints in flight)
    closing: bool = False
    done: bool = False

    def symptom(self, t_us: int) -> None:
        self.start_us = t_us if self.start_us is None else min(self.start_us, t_us)

    def touch(self, *entities: str) -> None:
        for entity in entities:
            self.affected.setdefault(entity, None)


def _one_per_variant(category: str) -> tuple[Scripted, ...]:
    variants = [v for v, _ in VARIANTS[category]]
    if category == "gpu_hbm":  # 94 and 95 already show under gpu_sram; keep hbm's scenario short
        variants = ["xid48", "xid63_64", "xid140"]
    if len(variants) == 1:
        return (Scripted(0.2, category, variants[0]),)
    step = 0.6 / (len(variants) - 1)
    return tuple(Scripted(round(0.1 + i * step, 3), category, v) for i, v in enumerate(variants))


_CATEGORY_SUMMARY: Final = {
    "gpu_hw": "faulty GPUs: XID 79 (falls off the bus), NVLink errors then XID 74, XID 62, XID 45",
    "gpu_hbm": "HBM: single-bit ECC rising, row remap pending, then a DBE and XID 48, 63+64 "
               "or 140",
    "gpu_sram": "on-chip SRAM ECC errors rising, then XID 94 or 95",
    "gpu_gsp": "GSP firmware: XID 119 or 120, the GPU goes idle, the job fails",
    "gpu_thermal": "one GPU heats 10-25 °C above its peers, throttles, and slows its whole job",
    "sdc": "silent data corruption: a job's loss spikes or turns NaN, no hardware signal",
    "software": "a bug: every rank of one job exits at once with the same error",
    "nccl_hang": "a collective hangs: step reports stop, GPUs spin, the NCCL watchdog fires",
    "network": "a flapping cable (symbol errors, then link flaps) and a dead leaf switch",
    "nic": "a host NIC: receive errors on its leaf port, then the port goes down for good",
    "host_maintenance": "unplanned maintenance: node drained and rebooted",
    "host_hw": "host hardware (PSU, board...): the node stops reporting, no GPU error first",
    "rack_power": "a PDU fails: every node of one rack goes dark in the same scrape",
    "cooling": "a rack's cooling degrades: all its GPUs warm together, then throttle",
    "storage": "checkpoint storage of one virtual cluster slows: checkpoints take 5-20x longer",
}


def _build_scenarios() -> dict[str, Scenario]:
    scenarios = [
        Scenario("llama3", "the calibrated mix: Llama 3's 419 interruptions by category, at the "
                 "base hazard × --fault-rate", weights={k: float(v) for k, v in
                                                        LLAMA3_COUNTS.items()}),
        Scenario("quiet", "no faults: healthy telemetry only (false-alarm baseline)"),
    ]
    for category in ALL_CATEGORIES:
        scenarios.append(Scenario(
            category, _CATEGORY_SUMMARY[category] + " (plus random ones at the hazard rate)",
            weights={category: 1.0}, scripted=_one_per_variant(category),
        ))
    scenarios.append(Scenario(
        "mixed", "overlapping faults: HBM precursor, NIC, rack cooling and a hot GPU in one "
        "scalable unit, then its leaf switch dies; a software crash and an NCCL hang elsewhere; "
        "on top of the llama3 mix",
        weights={k: float(v) for k, v in LLAMA3_COUNTS.items()},
        scripted=(
            Scripted(0.15, "gpu_hbm", "xid48"),
            Scripted(0.18, "nic", near=0),
            Scripted(0.2, "cooling", near=0),
            Scripted(0.22, "gpu_thermal", near=0),
            Scripted(0.25, "software"),
            Scripted(0.27, "nccl_hang"),
            Scripted(0.3, "network", "switch", near=0),
        ),
    ))
    for kind, category in FAILSLOW_KINDS.items():
        scenarios.append(Scenario(
            f"failslow_{kind}", f"fail-slow ({category}): {FAILSLOW_SUMMARY[kind]}; three of "
            "them, no other fault",
            scripted=tuple(Scripted(at, category, kind) for at in (0.1, 0.35, 0.6)),
        ))
    scenarios.append(Scenario(
        "failslow", "the fail-slow family: each of " + ", ".join(FAILSLOW_KINDS)
        + " twice, no error counter or XID naming them, no other fault",
        scripted=tuple(Scripted(round(0.05 + 0.06 * i, 2), FAILSLOW_KINDS[kind], kind)
                       for i, kind in enumerate(k for kinds in FAILSLOW_ROUNDS
                                                for k in [*kinds] * 2)),
    ))
    scenarios.append(Scenario(
        "quiet_confounders", "no faults, but what looks like them: planned checkpoints and jobs "
        "ending, benign XIDs 13/31/43, isolated counter blips, a rack warming a few degrees "
        "(none is in the truth)", confounders=True,
    ))
    scenarios.append(Scenario(
        "migration", "no faults; a job is migrated to another virtual cluster (pause, "
        "checkpoint, move, resume)", migrations=(0.25,),
    ))
    return {s.name: s for s in scenarios}


SCENARIOS: Final = _build_scenarios()


def get_scenario(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise SimulationError(
            f"unknown scenario {name!r}; `fleetlog scenarios` lists them: "
            + ", ".join(SCENARIOS)
        ) from None


def draw_variant(category: str, rng: RandomState) -> str:
    gen = check_random_state(rng)
    names = [v for v, _ in VARIANTS[category]]
    shares = [w for _, w in VARIANTS[category]]
    return names[int(gen.choice(len(names), p=[w / sum(shares) for w in shares]))]


def expected_faults(config: SimConfig) -> float:
    """Expected number of random faults in the window (Poisson mean)."""
    days = (config.end_us - config.start_us) / 8.64e10
    node_days = config.nodes * config.gpus_per_node / 8 * days
    return config.base_hazard * config.fault_rate * node_days


def plan_faults(config: SimConfig, random_state: RandomState = None) -> list[PlannedFault]:
    """Every fault of the run, in time order: random ones from the hazard, then scripted ones."""
    rng = check_random_state(random_state)
    scenario = get_scenario(config.scenario)
    start, end = config.start_us, config.end_us
    plan: list[PlannedFault] = []
    if scenario.weights:
        count = int(rng.poisson(expected_faults(config)))
        times = sorted(int(t) for t in rng.integers(start, end, size=count))
        names = sorted(scenario.weights)
        weights = [scenario.weights[n] for n in names]
        picks = rng.choice(len(names), size=count, p=[w / sum(weights) for w in weights])
        for t, pick in zip(times, picks, strict=True):
            category = names[int(pick)]
            plan.append(PlannedFault(t, category, draw_variant(category, rng)))
    for index, item in enumerate(scenario.scripted):
        at = start + round(item.at * (end - start))
        variant = item.variant or draw_variant(item.category, rng)
        plan.append(PlannedFault(at, item.category, variant, scripted=index, near=item.near))
    plan.sort(key=lambda f: (f.at_us, f.scripted if f.scripted is not None else -1))
    return plan
