"""The event contract: every fact fleetlog produces or reads, its envelope, topic, key and codec.

Every stage imports this module and nothing else defines an event. An event is an immutable
``Envelope`` (id, type, schema version, UTC event time, source, key) around a typed, frozen payload.

Wire format: msgpack (compact, fast) on Kafka; JSON for ``jsonl:`` files. ``decode`` reads either
and never raises: hostile bytes come back as a ``DecodeFailure`` that the caller routes to dead
letters.

Samples travel in batches, column-wise: one ``gpu.sampled`` event carries one scrape of one or more
nodes, each signal a little-endian array (float32 for gauges, float64 for counters) where NaN means
"not reported", which is kept distinct from zero all the way to the SQL views (NULL there).

Schema versions are upgraded on read by ``UPCASTERS`` (type, from_version) -> function on the
payload mapping; history is never rewritten.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Final

import msgspec
import numpy as np

from fleetlog.ingest.contract.time_range import RANGE_TEXT, in_range

# --------------------------------------------------------------------------------------------
# Topics (docs/design.md#topics-and-keys). The prefix is configurable so pipelines can share a
# broker.

DEFAULT_TOPIC_PREFIX: Final = "fleetlog"
TOPIC_FAMILIES: Final = ("inventory", "gpu", "net", "host", "jobs", "truth", "analysis", "dlq")


def topic_name(family: str, prefix: str = DEFAULT_TOPIC_PREFIX) -> str:
    """``topic_name("gpu")`` -> ``"fleetlog.gpu"``."""
    if family not in TOPIC_FAMILIES:
        raise ValueError(f"unknown topic family {family!r}; known: {', '.join(TOPIC_FAMILIES)}")
    return f"{prefix}.{family}"


def all_topics(prefix: str = DEFAULT_TOPIC_PREFIX) -> list[str]:
    return [topic_name(f, prefix) for f in TOPIC_FAMILIES]


# --------------------------------------------------------------------------------------------
# Entity names (docs/design.md#entities): gpu:<node>/<index>, node:<node>, nic:<node>/<index>,
# switch:<name>, link:<switch>/<port>, rack:<name>, job:<id>.


def gpu_entity(node: str, index: int) -> str:
    return f"gpu:{node}/{index}"


def node_entity(node: str) -> str:
    return f"node:{node}"


def nic_entity(node: str, index: int) -> str:
    return f"nic:{node}/{index}"


def switch_entity(switch: str) -> str:
    return f"switch:{switch}"


def link_entity(switch: str, port: int) -> str:
    return f"link:{switch}/{port}"


def rack_entity(rack: str) -> str:
    return f"rack:{rack}"


def job_entity(job: str) -> str:
    return f"job:{job}"


def storage_entity(name: str) -> str:
    """Shared checkpoint storage. An entity kind of its own for the `storage` scenario's root."""
    return f"storage:{name}"


ENTITY_KINDS: Final = ("gpu", "node", "nic", "switch", "link", "rack", "job", "storage")


_PCI_BUS_ID: Final = re.compile(
    r"^(?:([0-9a-f]{1,8}):)?([0-9a-f]{1,2}):([0-9a-f]{1,2})(?:\.([0-7]))?$")


def normalize_pci_bus_id(text: str | None) -> str | None:
    """One spelling of a PCI address, ``dddd:bb:dd.f`` in lower case, or None.

    nvidia-smi writes ``00000000:3B:00.0`` (8-digit domain), the kernel ``0000:3b:00.0`` or
    ``0000:3b:00`` (XID lines leave the function out), dcgm-exporter either, and people ``3b:00.0``:
    all name the same GPU, so the domain keeps its last four digits (0000 when absent) and a
    missing function is 0.
    """
    if not text:
        return None
    match = _PCI_BUS_ID.match(text.strip().lower().removeprefix("pci:"))
    if match is None:
        return None
    domain, bus, device, function = match.groups()
    domain = (domain or "0")[-4:].rjust(4, "0")
    return f"{domain}:{bus.rjust(2, '0')}:{device.rjust(2, '0')}.{function or 0}"


def entity_kind(entity: str) -> str:
    kind, sep, rest = entity.partition(":")
    if not sep or not rest or kind not in ENTITY_KINDS:
        raise ValueError(f"not an entity name: {entity!r} (expected e.g. 'node:n0001')")
    return kind


# --------------------------------------------------------------------------------------------
# Signals carried by sample batches. Column names carry units; ``source`` is the name the real
# tool uses, so real data maps 1:1.


@dataclass(frozen=True, slots=True)
class Signal:
    column: str
    source: str
    dtype: str  # numpy dtype string, little-endian
    kind: str  # "gauge" | "counter" | "state" | "bitmask"
    help: str


GPU_SIGNALS: Final = (
    Signal("util_pct", "DCGM_FI_DEV_GPU_UTIL", "<f4", "gauge", "GPU utilization (%)"),
    Signal("sm_clock_mhz", "DCGM_FI_DEV_SM_CLOCK", "<f4", "gauge", "SM clock (MHz)"),
    Signal("gpu_temp_c", "DCGM_FI_DEV_GPU_TEMP", "<f4", "gauge", "GPU temperature (°C)"),
    Signal("mem_temp_c", "DCGM_FI_DEV_MEMORY_TEMP", "<f4", "gauge", "HBM temperature (°C)"),
    Signal("power_w", "DCGM_FI_DEV_POWER_USAGE", "<f4", "gauge", "Power draw (W)"),
    Signal("fb_used_mib", "DCGM_FI_DEV_FB_USED", "<f4", "gauge", "Framebuffer used (MiB)"),
    Signal(
        "ecc_sbe_vol_total", "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", "<f8", "counter",
        "Volatile single-bit ECC errors",
    ),
    Signal(
        "ecc_dbe_vol_total", "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "<f8", "counter",
        "Volatile double-bit ECC errors",
    ),
    Signal(
        "sram_ecc_total", "DCGM_FI_DEV_ECC_SBE_AGG_SRM", "<f8", "counter",
        "On-chip SRAM ECC errors (aggregate)",
    ),
    Signal(
        "row_remap_pending", "DCGM_FI_DEV_ROW_REMAP_PENDING", "<f4", "state",
        "Row remapping pending (1 = yes)",
    ),
    Signal(
        "row_remap_failure", "DCGM_FI_DEV_ROW_REMAP_FAILURE", "<f4", "state",
        "Row remapping failed (1 = yes)",
    ),
    Signal(
        "nvlink_crc_flit_errors", "DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL", "<f8",
        "counter", "NVLink CRC flit errors",
    ),
    Signal(
        "pcie_replays", "DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "<f8", "counter", "PCIe replays",
    ),
    Signal(
        "throttle_reasons", "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", "<f8", "bitmask",
        "Clock throttle reasons (0x4 power cap, 0x8 HW slowdown, 0x20 SW thermal, "
        "0x40 HW thermal, 0x80 power brake)",
    ),
)

PORT_SIGNALS: Final = (
    Signal("xmit_data", "port_xmit_data", "<f8", "counter", "Data sent (32-bit words)"),
    Signal("rcv_data", "port_rcv_data", "<f8", "counter", "Data received (32-bit words)"),
    Signal("symbol_error", "symbol_error", "<f8", "counter", "Symbol errors"),
    Signal("rcv_errors", "port_rcv_errors", "<f8", "counter", "Receive errors"),
    Signal("link_downed", "link_downed", "<f8", "counter", "Times the link went down"),
    Signal(
        "link_error_recovery", "link_error_recovery", "<f8", "counter",
        "Link error recoveries",
    ),
    Signal("xmit_discards", "port_xmit_discards", "<f8", "counter", "Discarded sends"),
    Signal(
        "link_state", "state", "<f4", "state",
        "IB port state (1 Down, 2 Init, 3 Armed, 4 Active)",
    ),
)

GPU_SIGNAL_BY_COLUMN: Final = {s.column: s for s in GPU_SIGNALS}
PORT_SIGNAL_BY_COLUMN: Final = {s.column: s for s in PORT_SIGNALS}
# Byte width per column, computed once: batch validation runs for every sample message.
SIGNAL_WIDTHS: Final = {s.column: np.dtype(s.dtype).itemsize
                         for s in (*GPU_SIGNALS, *PORT_SIGNALS)}

# Throttle-reason bits (DCGM_FI_DEV_CLOCK_THROTTLE_REASONS).
THROTTLE_POWER_CAP: Final = 0x4
THROTTLE_HW_SLOWDOWN: Final = 0x8
THROTTLE_SW_THERMAL: Final = 0x20
THROTTLE_HW_THERMAL: Final = 0x40
THROTTLE_POWER_BRAKE: Final = 0x80

# IB port states as /sys/class/infiniband/*/ports/*/state reports them.
PORT_STATE_DOWN: Final = 1.0
PORT_STATE_ACTIVE: Final = 4.0

# --------------------------------------------------------------------------------------------
# Fault taxonomy (docs/design.md#fault-taxonomy).

FAULT_CATEGORIES: Final = (
    "gpu_hw", "gpu_hbm", "gpu_sram", "gpu_gsp", "gpu_thermal", "sdc", "software", "nccl_hang",
    "network", "nic", "host_maintenance", "host_hw",
)
SCENARIO_CATEGORIES: Final = ("rack_power", "cooling", "storage")
ALL_CATEGORIES: Final = FAULT_CATEGORIES + SCENARIO_CATEGORIES
# What the analysis can conclude that is not a failure of the cluster itself: the telemetry of a
# node stopped while the node still shows life (kernel lines, job steps, port traffic), so the
# exporter or collector is down. Never injected, never a capacity-taking action.
OBSERVATION_CATEGORIES: Final = ("telemetry_gap",)
INCIDENT_CATEGORIES: Final = ALL_CATEGORIES + OBSERVATION_CATEGORIES

# Slurm's end states (sacct ``State``), by whose account the job ended (docs/faults.md#jobs).
# The job's own account: its code, its limits, its owner or the scheduler's policy; no claim
# about the infrastructure.
JOB_OUTCOME_STATES: Final = frozenset({
    "COMPLETED", "FAILED", "TIMEOUT", "OUT_OF_MEMORY", "CANCELLED", "PREEMPTED", "REQUEUED",
    "DEADLINE",
})
# The scheduler's word that a node failed under the job: evidence about those nodes.
NODE_EVIDENCE_STATES: Final = frozenset({"NODE_FAIL", "BOOT_FAIL"})


def scheduler_state(reason: str | None) -> str | None:
    """The scheduler end state a job event's ``reason`` starts with (``CANCELLED by 42`` ->
    ``CANCELLED``), or None when the reason is the job's own words (a launcher's message)."""
    if not reason:
        return None
    first = reason.split(maxsplit=1)[0].rstrip("+").upper()
    return first if first in JOB_OUTCOME_STATES | NODE_EVIDENCE_STATES else None

# --------------------------------------------------------------------------------------------
# Payloads. Each is frozen and names its type, current schema version and topic family.


class Payload(msgspec.Struct, frozen=True, kw_only=True):
    TYPE: ClassVar[str]
    VERSION: ClassVar[int] = 1
    TOPIC: ClassVar[str]

    def default_key(self) -> str:
        raise NotImplementedError


def _check_values(
    name: str, rows: int, signals: list[str], values: bytes, known: Mapping[str, Signal]
) -> None:
    # Every sample message is validated: the byte length a (row count, signal list) needs is
    # computed once per shape, then checked with one comparison (bench/bench_ingest.py).
    key = (name, rows, *signals)
    expected = _EXPECTED_LENGTHS.get(key)
    if expected is None:
        for signal in signals:
            if signal not in known:
                raise ValueError(f"{name}: unknown column {signal!r}")
        if len(set(signals)) != len(signals):
            raise ValueError(f"{name}: a column is listed twice in {signals!r}")
        expected = rows * sum(SIGNAL_WIDTHS[signal] for signal in signals)
        if len(_EXPECTED_LENGTHS) >= 4096:  # a hostile stream of odd shapes stays bounded
            _EXPECTED_LENGTHS.clear()
        _EXPECTED_LENGTHS[key] = expected
    if len(values) != expected:
        raise ValueError(f"{name}: values has {len(values)} bytes, expected {expected} "
                         f"({rows} rows of {len(signals)} columns)")


_EXPECTED_LENGTHS: dict[tuple[Any, ...], int] = {}


def _check_groups(
    name: str, members: list[str], counts: list[int], index: bytes, width: int
) -> int:
    if len(members) != len(counts):
        raise ValueError(f"{name}: {len(members)} entities but {len(counts)} row counts")
    if min(counts, default=0) < 0:
        raise ValueError(f"{name}: negative row count")
    rows = sum(counts)
    if len(index) != rows * width:
        raise ValueError(f"{name}: index has {len(index)} bytes, expected {rows} x {width}")
    return rows


def _split_values(signals: list[str], values: bytes, rows: int) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    offset = 0
    for signal in signals:
        size = rows * SIGNAL_WIDTHS[signal]
        out[signal] = values[offset:offset + size]
        offset += size
    return out


def _join_columns(columns: Mapping[str, bytes], known: Mapping[str, Signal]
                  ) -> tuple[list[str], bytes]:
    """(signals in the contract's order, their bytes one after another)."""
    for column in columns:
        if column not in known:
            raise ValueError(f"unknown column {column!r}")
    signals = [name for name in known if name in columns]
    return signals, b"".join(columns[name] for name in signals)


def _upcast_columns_v1(mapping: dict[str, Any]) -> dict[str, Any]:
    """Version 1 carried ``columns`` as a map of byte strings (base64 text in JSON); version 2
    carries ``signals`` and one ``values`` buffer, so a batch decodes into one bytes object."""
    columns = mapping.pop("columns", None) or {}
    if not isinstance(columns, dict):
        raise msgspec.ValidationError("columns is not a mapping")
    parts = {k: base64.b64decode(v, validate=True) if isinstance(v, str) else v
             for k, v in columns.items()}
    if not all(isinstance(v, bytes) for v in parts.values()):
        raise msgspec.ValidationError("a column is not bytes")
    mapping["signals"] = list(parts)
    mapping["values"] = b"".join(parts.values())
    return mapping


class GpuSampled(Payload, frozen=True, kw_only=True):
    """One scrape of one or more nodes: ``gpu_count[i]`` rows for ``nodes[i]``, in order.

    ``values`` holds the arrays of the columns named in ``signals``, one after another (each
    ``rows`` little-endian values of its signal's dtype; NaN = not reported). One buffer per
    message: decoding creates one bytes object, and a batch of same-shaped messages becomes
    columns by one reshape (ingest/store/tables.py).
    """

    TYPE: ClassVar[str] = "gpu.sampled"
    VERSION: ClassVar[int] = 2
    TOPIC: ClassVar[str] = "gpu"

    nodes: list[str]
    gpu_count: list[int]
    gpu: bytes  # uint8 GPU index per row
    signals: list[str]  # GPU_SIGNALS columns present, in the order of their arrays in values
    values: bytes

    def __post_init__(self) -> None:
        rows = _check_groups(self.TYPE, self.nodes, self.gpu_count, self.gpu, 1)
        _check_values(self.TYPE, rows, self.signals, self.values, GPU_SIGNAL_BY_COLUMN)

    @property
    def rows(self) -> int:
        return len(self.gpu)

    @property
    def columns(self) -> dict[str, bytes]:
        """Column name -> its little-endian array (a copy, cut from ``values``)."""
        return _split_values(self.signals, self.values, self.rows)

    def default_key(self) -> str:
        return node_entity(self.nodes[0]) if len(self.nodes) == 1 else f"batch:{self.nodes[0]}"


class PortSampled(Payload, frozen=True, kw_only=True):
    """One scrape of the ports of one or more switches (or host HCAs, named ``<node>/<hca>``);
    ``signals`` and ``values`` as in ``GpuSampled``."""

    TYPE: ClassVar[str] = "port.sampled"
    VERSION: ClassVar[int] = 2
    TOPIC: ClassVar[str] = "net"

    switches: list[str]
    port_count: list[int]
    port: bytes  # uint16 port number per row
    signals: list[str]
    values: bytes

    def __post_init__(self) -> None:
        rows = _check_groups(self.TYPE, self.switches, self.port_count, self.port, 2)
        _check_values(self.TYPE, rows, self.signals, self.values, PORT_SIGNAL_BY_COLUMN)

    @property
    def rows(self) -> int:
        return len(self.port) // 2

    @property
    def columns(self) -> dict[str, bytes]:
        return _split_values(self.signals, self.values, self.rows)

    def default_key(self) -> str:
        if len(self.switches) == 1:
            return switch_entity(self.switches[0])
        return f"batch:{self.switches[0]}"


# Inventory: the topology is data, learned by analysis from these events.


class RackRegistered(Payload, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "rack.registered"
    TOPIC: ClassVar[str] = "inventory"

    rack: str
    region: str
    pdu: str
    cooling_zone: str

    def default_key(self) -> str:
        return rack_entity(self.rack)


class NodeRegistered(Payload, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "node.registered"
    TOPIC: ClassVar[str] = "inventory"

    node: str
    rack: str
    region: str
    vcluster: str
    gpu_count: int
    gpu_model: str
    nic_count: int
    spare: bool = False

    def default_key(self) -> str:
        return node_entity(self.node)


class SwitchRegistered(Payload, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "switch.registered"
    TOPIC: ClassVar[str] = "inventory"

    switch: str
    tier: str  # "leaf" | "spine"
    region: str

    def default_key(self) -> str:
        return switch_entity(self.switch)


class LinkRegistered(Payload, frozen=True, kw_only=True):
    """A cable: ``switch`` port ``port`` to ``peer`` (an entity: ``nic:...`` or ``switch:...``)."""

    TYPE: ClassVar[str] = "link.registered"
    TOPIC: ClassVar[str] = "inventory"

    switch: str
    port: int
    peer: str

    def default_key(self) -> str:
        return switch_entity(self.switch)


class GpuRegistered(Payload, frozen=True, kw_only=True):
    """One GPU of a node as an inventory source lists it (nvidia-smi, dcgm-exporter): its index
    and PCI address, so a kernel XID line (which names the PCI address) lands on ``gpu:<node>/<i>``.
    ``pci_bus_id`` is normalised (``normalize_pci_bus_id``)."""

    TYPE: ClassVar[str] = "gpu.registered"
    TOPIC: ClassVar[str] = "inventory"

    node: str
    gpu: int
    pci_bus_id: str | None = None
    uuid: str = ""
    model: str = ""

    def default_key(self) -> str:
        return gpu_entity(self.node, self.gpu)


# Host


class XidReported(Payload, frozen=True, kw_only=True):
    """An NVIDIA XID from the kernel log. Name, action and fatal flag come from the catalog."""

    TYPE: ClassVar[str] = "xid.reported"
    TOPIC: ClassVar[str] = "host"

    node: str
    gpu: int | None = None
    pci_bus_id: str | None = None
    xid: int
    message: str = ""
    pid: int | None = None

    def default_key(self) -> str:
        return node_entity(self.node)


class NodeWentDown(Payload, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "node.went_down"
    TOPIC: ClassVar[str] = "host"

    node: str
    reason: str = ""

    def default_key(self) -> str:
        return node_entity(self.node)


class NodeCameUp(Payload, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "node.came_up"
    TOPIC: ClassVar[str] = "host"

    node: str

    def default_key(self) -> str:
        return node_entity(self.node)


class NodeMaintenanceStarted(Payload, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "node.maintenance_started"
    TOPIC: ClassVar[str] = "host"

    node: str
    reason: str = ""

    def default_key(self) -> str:
        return node_entity(self.node)


class NodeMaintenanceEnded(Payload, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "node.maintenance_ended"
    TOPIC: ClassVar[str] = "host"

    node: str

    def default_key(self) -> str:
        return node_entity(self.node)


# Jobs


class _JobPayload(Payload, frozen=True, kw_only=True):
    TOPIC: ClassVar[str] = "jobs"

    job: str

    def default_key(self) -> str:
        return job_entity(self.job)


class JobSubmitted(_JobPayload, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "job.submitted"

    gpus: int
    vcluster: str
    model_params_b: float = 0.0  # model size, billions of parameters
    checkpoint_interval_s: float = 3600.0


class JobPlaced(_JobPayload, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "job.placed"

    nodes: list[str]
    vcluster: str


class JobStarted(_JobPayload, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "job.started"

    step: int = 0


class JobStepReported(_JobPayload, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "job.step_reported"

    step: int
    step_time_s: float
    tokens_per_s: float
    loss: float | None = None


class JobCheckpointStarted(_JobPayload, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "job.checkpoint_started"

    step: int


class JobCheckpointCompleted(_JobPayload, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "job.checkpoint_completed"

    step: int
    duration_s: float
    size_gb: float


class JobFailed(_JobPayload, frozen=True, kw_only=True):
    """A job ended abnormally. ``reason``: the scheduler's state as it wrote it (``FAILED``,
    ``NODE_FAIL``, ``OUT_OF_MEMORY``...) or the launcher's message. A value the source does not
    carry is None (NULL in SQL), never a made-up -1 or 0: version 1 required ``exit_code`` (-1
    stood for "not given") and defaulted ``lost_s`` to 0.0."""

    TYPE: ClassVar[str] = "job.failed"
    VERSION: ClassVar[int] = 2

    step: int
    exit_code: int | None = None
    reason: str
    lost_s: float | None = None  # work since the last completed checkpoint, when known


def _upcast_job_failed_v1(mapping: dict[str, Any]) -> dict[str, Any]:
    """Version 1 wrote -1 for an exit code the source did not give: it is None now. Its
    ``lost_s`` defaulted to 0.0, so an absent one stays 0.0 (what version 1 meant)."""
    if mapping.get("exit_code") == -1:
        mapping["exit_code"] = None
    mapping.setdefault("lost_s", 0.0)
    return mapping


class JobRestarted(_JobPayload, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "job.restarted"

    from_step: int
    nodes: list[str]
    overhead_s: float = 0.0
    # Why, when a scheduler says (sacct's REQUEUED); added with a default, so older events read
    # as "not said".
    reason: str = ""


class JobMigrated(_JobPayload, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "job.migrated"

    from_vcluster: str
    to_vcluster: str
    nodes: list[str]


class JobCompleted(_JobPayload, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "job.completed"

    step: int


class JobCancelled(_JobPayload, frozen=True, kw_only=True):
    """Stopped on purpose (a user or an admin), not a failure: no incident, no lost-work blame."""

    TYPE: ClassVar[str] = "job.cancelled"

    step: int = 0
    by: str = ""  # who cancelled it, as the scheduler reports it (e.g. a uid)
    reason: str = ""


# Ground truth: read by evaluation only, never by detectors.


class FaultInjected(Payload, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "fault.injected"
    TOPIC: ClassVar[str] = "truth"

    fault_id: str
    category: str
    entity: str  # root entity, e.g. "gpu:n0001/3"
    start_us: int  # onset of the first symptom
    end_us: int | None = None
    affected: list[str] = msgspec.field(default_factory=list)
    scenario: str = ""
    detail: str = ""

    def __post_init__(self) -> None:
        if self.category not in ALL_CATEGORIES:
            raise ValueError(f"fault.injected: unknown category {self.category!r}")
        entity_kind(self.entity)

    def default_key(self) -> str:
        return f"fault:{self.fault_id}"


# Analysis results, published back as events so automation can consume them.


class Candidate(msgspec.Struct, frozen=True, kw_only=True):
    category: str
    entity: str
    score: float


class IncidentOpened(Payload, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "incident.opened"
    TOPIC: ClassVar[str] = "analysis"

    incident_id: str
    start_us: int
    end_us: int | None = None
    category: str
    root_entity: str
    confidence: float
    candidates: list[Candidate] = msgspec.field(default_factory=list)
    evidence: list[str] = msgspec.field(default_factory=list)  # event ids

    def default_key(self) -> str:
        return self.root_entity


class RecommendationIssued(Payload, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "recommendation.issued"
    TOPIC: ClassVar[str] = "analysis"

    incident_id: str
    target: str
    action: str
    reason: str
    gpu_hours_saved: float = 0.0
    # The id of the recommendation to carry out first (a swap_node follows its checkpoint_now):
    # automation orders them by this, not by time. Added after version 1 with a default, so
    # older messages read as "no predecessor".
    after: str | None = None

    def default_key(self) -> str:
        return self.target


# Actions: what ``fleetlog act`` did about a recommendation through a scheduler (docs/act.md).
# One event per attempt, landed in the store so a restart repeats nothing and the report shows
# them. Topic "analysis": they are results of the same loop (recommendation -> action) and are
# consumed by the same automation; a topic of their own would add a family every ingester and
# broker setup must learn, for a trickle of events.


class _ActionPayload(Payload, frozen=True, kw_only=True):
    TOPIC: ClassVar[str] = "analysis"

    # Deterministic, from the recommendation id and the action: the same recommendation is the
    # same action, in every run.
    action_id: str
    recommendation_id: str
    incident_id: str
    action: str  # fleetlog's action (drain_node, restart_from_checkpoint, ...)
    target: str  # the recommendation's target entity (node:<name>, gpu:..., job:<id>)
    backend: str  # "slurm"
    command: str = ""  # the exact command line(s) run, as shown to people ("; "-joined)

    def default_key(self) -> str:
        return self.target


class ActionExecuted(_ActionPayload, frozen=True, kw_only=True):
    """The backend ran the command; ``verified``: reading the node or job state afterwards
    showed it took (False: escalated to a human)."""

    TYPE: ClassVar[str] = "action.executed"

    verified: bool


class ActionSkipped(_ActionPayload, frozen=True, kw_only=True):
    """Not carried out, and why: no backend operation for it, a node drained by someone else,
    the per-node budget, the circuit breaker, a missing predecessor."""

    TYPE: ClassVar[str] = "action.skipped"

    why: str


class ActionFailed(_ActionPayload, frozen=True, kw_only=True):
    """The backend refused or failed the command: its error."""

    TYPE: ClassVar[str] = "action.failed"

    error: str


ACTION_TYPES: Final = ("action.executed", "action.skipped", "action.failed")


PAYLOAD_TYPES: Final[dict[str, type[Payload]]] = {
    cls.TYPE: cls
    for cls in (
        GpuSampled, PortSampled, RackRegistered, NodeRegistered, SwitchRegistered, LinkRegistered,
        GpuRegistered, XidReported, NodeWentDown, NodeCameUp, NodeMaintenanceStarted,
        NodeMaintenanceEnded,
        JobSubmitted, JobPlaced, JobStarted, JobStepReported, JobCheckpointStarted,
        JobCheckpointCompleted, JobFailed, JobRestarted, JobMigrated, JobCompleted, JobCancelled,
        FaultInjected, IncidentOpened, RecommendationIssued, ActionExecuted, ActionSkipped,
        ActionFailed,
    )
}

# --------------------------------------------------------------------------------------------
# Envelope


class Envelope(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    type: str
    v: int
    time_us: int  # event time, microseconds since the Unix epoch, UTC
    source: str
    key: str
    payload: Payload

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.time_us / 1_000_000, tz=UTC)

    @property
    def topic_family(self) -> str:
        return type(self.payload).TOPIC


def to_us(t: datetime) -> int:
    """UTC microseconds of an aware datetime. Naive datetimes are refused: no guessing zones."""
    if t.tzinfo is None:
        raise ValueError(f"naive datetime {t.isoformat()}: give a time zone (none is assumed)")
    return int(t.timestamp()) * 1_000_000 + t.microsecond


def _identity(payload: Payload) -> Any:
    """What a content-hash id is computed from. Sample batches hash their version-1 layout (a
    map of columns), so an id does not change when a new version lays the same fact out
    differently on the wire: a file imported again after an upgrade lands nothing new."""
    if isinstance(payload, GpuSampled):
        return {"nodes": payload.nodes, "gpu_count": payload.gpu_count, "gpu": payload.gpu,
                "columns": payload.columns}
    if isinstance(payload, PortSampled):
        return {"switches": payload.switches, "port_count": payload.port_count,
                "port": payload.port, "columns": payload.columns}
    if isinstance(payload, RecommendationIssued) and payload.after is None:
        # The layout before ``after`` existed: a recommendation without one keeps its id.
        return {name: getattr(payload, name) for name in _RECOMMENDATION_V1_FIELDS}
    return payload


_RECOMMENDATION_V1_FIELDS: Final = ("incident_id", "target", "action", "reason",
                                    "gpu_hours_saved")


def make_event(
    payload: Payload, *, time_us: int, source: str, id: str | None = None, key: str | None = None
) -> Envelope:
    """Wrap a payload. Without ``id``, a content hash makes the same fact get the same id."""
    if id is None:
        digest = hashlib.blake2b(
            msgspec.msgpack.encode(_identity(payload))
            + f"|{payload.TYPE}|{time_us}|{source}".encode(),
            digest_size=12,
        )
        id = digest.hexdigest()
    return Envelope(
        id=id,
        type=payload.TYPE,
        v=payload.VERSION,
        time_us=time_us,
        source=source,
        key=key if key is not None else payload.default_key(),
        payload=payload,
    )


# --------------------------------------------------------------------------------------------
# Codec


# An id is short (a 24-digit content hash, "sim-17"). Bounded on the wire, the one place input
# becomes an event, so a hostile id cannot bloat every copy of it (the ingester's offsets sidecar
# keeps the last 2,048 ids and is rewritten after every commit): a longer one is refused by
# decode at the envelope stage and becomes a dead letter like any other malformed envelope.
MAX_ID_LENGTH: Final = 128


class _WireEnvelope(msgspec.Struct, frozen=True, kw_only=True):
    id: Annotated[str, msgspec.Meta(max_length=MAX_ID_LENGTH)]
    type: str
    v: int
    time_us: int
    source: str
    key: str
    payload: msgspec.Raw


class DecodeFailure(msgspec.Struct, frozen=True, kw_only=True):
    """Why bytes could not become an event. Routed to ``dead_letters``, never raised."""

    stage: str  # "envelope" | "type" | "version" | "payload"
    reason: str
    event_type: str | None = None
    event_id: str | None = None


Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
# (type, version) -> function turning that version's payload mapping into version + 1.
UPCASTERS: dict[tuple[str, int], Upcaster] = {}
UPCASTERS[(GpuSampled.TYPE, 1)] = _upcast_columns_v1
UPCASTERS[(PortSampled.TYPE, 1)] = _upcast_columns_v1
UPCASTERS[(JobFailed.TYPE, 1)] = _upcast_job_failed_v1

_msgpack_encoder = msgspec.msgpack.Encoder()
_json_encoder = msgspec.json.Encoder()
_msgpack_envelope = msgspec.msgpack.Decoder(_WireEnvelope)
_json_envelope = msgspec.json.Decoder(_WireEnvelope)
_msgpack_payload = {t: msgspec.msgpack.Decoder(cls) for t, cls in PAYLOAD_TYPES.items()}
_json_payload = {t: msgspec.json.Decoder(cls) for t, cls in PAYLOAD_TYPES.items()}
_MAX_VERSION_GAP: Final = 100


def encode(event: Envelope) -> bytes:
    """The Kafka wire form (msgpack)."""
    return _msgpack_encoder.encode(event)


def encode_json(event: Envelope) -> bytes:
    """The ``jsonl:`` file form: one JSON object, no trailing newline."""
    return _json_encoder.encode(event)


def encode_many(events: Iterable[Envelope]) -> list[bytes]:
    return [_msgpack_encoder.encode(e) for e in events]


def decode(data: bytes | bytearray | memoryview | None) -> Envelope | DecodeFailure:
    """Bytes (msgpack or JSON) -> an event, or a ``DecodeFailure`` saying why. Never raises."""
    try:
        return _decode(bytes(data) if data is not None else b"")
    except Exception as exc:  # hostile input may trip anything; it must become data, not a crash
        return DecodeFailure(stage="envelope", reason=f"{type(exc).__name__}: {exc}"[:500])


def _decode(data: bytes) -> Envelope | DecodeFailure:
    if not data:
        return DecodeFailure(stage="envelope", reason="empty message")
    is_json = data.lstrip()[:1] == b"{"
    try:
        wire = (_json_envelope if is_json else _msgpack_envelope).decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return DecodeFailure(stage="envelope", reason=str(exc)[:500])
    return _from_wire(wire, is_json)


def decode_parts(
    event_id: str, kind: str, version: int, time_us: int, source: str, key: str,
    payload_json: bytes,
) -> Envelope | DecodeFailure:
    """An event kept as its parts (the store's ``event_log`` row: envelope columns and the
    payload's JSON) back into the event, checked and upcast exactly as ``decode`` does, without
    first encoding an envelope for ``decode`` to parse again. Never raises."""
    try:
        if len(event_id) > MAX_ID_LENGTH:  # what the wire envelope's Meta refuses
            return DecodeFailure(stage="envelope",
                                 reason=f"Expected `str` of length <= {MAX_ID_LENGTH} - at `$.id`")
        wire = _WireEnvelope(id=event_id, type=kind, v=version, time_us=time_us, source=source,
                             key=key, payload=msgspec.Raw(payload_json))
        return _from_wire(wire, True)
    except Exception as exc:  # as in ``decode``: whatever the row holds becomes data
        return DecodeFailure(stage="envelope", reason=f"{type(exc).__name__}: {exc}"[:500])


def _from_wire(wire: _WireEnvelope, is_json: bool) -> Envelope | DecodeFailure:
    """The checks and the payload decoding (with upcasting) every path in shares."""
    if not in_range(wire.time_us):
        return DecodeFailure(
            stage="envelope", reason=f"event time {wire.time_us} us is outside {RANGE_TEXT}",
            event_type=wire.type, event_id=wire.id,
        )
    cls = PAYLOAD_TYPES.get(wire.type)
    if cls is None:
        return DecodeFailure(
            stage="type", reason=f"unknown event type {wire.type!r}", event_type=wire.type,
            event_id=wire.id,
        )
    if wire.v > cls.VERSION or wire.v < 1 or cls.VERSION - wire.v > _MAX_VERSION_GAP:
        return DecodeFailure(
            stage="version",
            reason=f"{wire.type} version {wire.v} is not readable "
            f"(this build reads 1..{cls.VERSION})",
            event_type=wire.type, event_id=wire.id,
        )
    try:
        if wire.v == cls.VERSION:
            decoder = _json_payload[wire.type] if is_json else _msgpack_payload[wire.type]
            payload = decoder.decode(wire.payload)
        else:
            mapping = (msgspec.json if is_json else msgspec.msgpack).decode(wire.payload)
            if not isinstance(mapping, dict):
                raise msgspec.ValidationError("payload is not a mapping")
            for version in range(wire.v, cls.VERSION):
                upcast = UPCASTERS.get((wire.type, version))
                if upcast is None:
                    raise msgspec.ValidationError(f"no upcaster from version {version}")
                mapping = upcast(mapping)
            # JSON carries bytes as base64 strings; convert() turns them back for bytes fields.
            payload = msgspec.convert(mapping, cls, strict=not is_json)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return DecodeFailure(
            stage="payload", reason=str(exc)[:500], event_type=wire.type, event_id=wire.id
        )
    if is_json:
        # JSON integers are unbounded; the wire (msgpack) and DuckDB are not. Refuse here,
        # where the error can still name the event, rather than fail when landing it.
        try:
            _msgpack_encoder.encode(payload)
        except (OverflowError, msgspec.EncodeError) as exc:
            return DecodeFailure(stage="payload", reason=f"value out of range: {exc}"[:500],
                                 event_type=wire.type, event_id=wire.id)
    return Envelope(
        id=wire.id, type=wire.type, v=cls.VERSION, time_us=wire.time_us, source=wire.source,
        key=wire.key, payload=payload,
    )


# --------------------------------------------------------------------------------------------
# Column helpers for sample batches (shared by generators, readers and the ingest writer).


def pack_column(values: np.ndarray[Any, Any] | list[float], signal: Signal) -> bytes:
    return np.asarray(values, dtype=signal.dtype).tobytes()


def unpack_column(data: bytes, signal: Signal) -> np.ndarray[Any, Any]:
    return np.frombuffer(data, dtype=signal.dtype)


def gpu_batch(
    nodes: list[str], gpu_count: list[int], gpu: np.ndarray[Any, Any] | list[int],
    columns: Mapping[str, np.ndarray[Any, Any] | list[float]],
) -> GpuSampled:
    """Build a ``gpu.sampled`` payload from arrays (missing values as NaN)."""
    return gpu_payload(nodes, gpu_count, np.asarray(gpu, dtype="u1").tobytes(), {
        c: pack_column(v, GPU_SIGNAL_BY_COLUMN[c]) for c, v in columns.items()})


def port_batch(
    switches: list[str], port_count: list[int], port: np.ndarray[Any, Any] | list[int],
    columns: Mapping[str, np.ndarray[Any, Any] | list[float]],
) -> PortSampled:
    return port_payload(switches, port_count, np.asarray(port, dtype="<u2").tobytes(), {
        c: pack_column(v, PORT_SIGNAL_BY_COLUMN[c]) for c, v in columns.items()})


def gpu_payload(nodes: list[str], gpu_count: list[int], gpu: bytes,
                columns: Mapping[str, bytes]) -> GpuSampled:
    """A ``gpu.sampled`` payload from packed column bytes (signals in the contract's order)."""
    signals, values = _join_columns(columns, GPU_SIGNAL_BY_COLUMN)
    return GpuSampled(nodes=nodes, gpu_count=gpu_count, gpu=gpu, signals=signals, values=values)


def port_payload(switches: list[str], port_count: list[int], port: bytes,
                 columns: Mapping[str, bytes]) -> PortSampled:
    signals, values = _join_columns(columns, PORT_SIGNAL_BY_COLUMN)
    return PortSampled(switches=switches, port_count=port_count, port=port, signals=signals,
                       values=values)
