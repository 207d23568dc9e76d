"""GPU and port samples for the whole cluster, one scrape at a time, vectorized with numpy.

Healthy values follow each GPU's job phase (docs/faults.md): compute (util 95-100 %, 600-700 W),
communication (util 40-70 %, lower power), checkpoint (util < 15 %, 100-200 W), idle (util 0,
~70 W, 30-40 °C) and the NCCL-hang spin (util 100 %, low power). Every GPU has a fixed temperature
offset (± 4 °C), a power offset and noise; temperature follows power with thermal inertia. Rare
benign single-bit ECC errors, PCIe replays and symbol errors hit healthy parts.

Faults change the telemetry through ``Overlay`` objects (temperature ramps, throttling, counter
ramps on a few GPUs or ports) and through the state arrays (``present``, ``node_up``,
``forced_idle``, ``port_state``); ``Telemetry.clear(owner)`` removes a fault's overlays at repair.

Hot path: per scrape a few dozen numpy operations over all GPUs and ports, one ``tobytes`` per
column, then ``generators.batches`` cuts those bytes into one ``GpuSampled`` per rack and one
``PortSampled`` per switch (no Python object per sample; per-column, not per-event, work).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from fleetlog.generators.batches import BatchSet
from fleetlog.generators.config import SimConfig
from fleetlog.generators.topology import PORT_DOWN, PORT_UP, Topology
from fleetlog.ingest import contract as c

PHASE_IDLE, PHASE_COMPUTE, PHASE_COMM, PHASE_CKPT, PHASE_HANG = 0, 1, 2, 3, 4

F4 = np.float32
FloatArray = np.ndarray[Any, np.dtype[np.float32]]
Float64Array = np.ndarray[Any, np.dtype[np.float64]]
IndexArray = np.ndarray[Any, np.dtype[np.intp]]

#                              idle  compute  comm  ckpt  hang
_UTIL_LO: Final = np.array([0.0, 95.0, 40.0, 0.0, 100.0], dtype=F4)
_UTIL_SPAN: Final = np.array([0.0, 5.0, 30.0, 14.0, 0.0], dtype=F4)
_POWER_LO: Final = np.array([64.0, 600.0, 300.0, 100.0, 150.0], dtype=F4)
_POWER_SPAN: Final = np.array([12.0, 100.0, 150.0, 100.0, 70.0], dtype=F4)
_CLOCK: Final = np.array([345.0, 1980.0, 1980.0, 1980.0, 1980.0], dtype=F4)
_LINK_SHARE: Final = np.array([0.0005, 0.2, 0.75, 0.02, 0.0], dtype=F4)  # of link bandwidth
_LINK_WORDS_PER_S: Final = 400e9 / 8 / 4  # NDR 400 Gb/s in 32-bit words
_POWER_CAP_W: Final = 690.0
_DAY_S: Final = 86_400.0

# Benign background (per part per day): a lone SBE or a few symbol errors are not faults.
SBE_PER_GPU_DAY: Final = 0.05
PCIE_REPLAY_PER_GPU_DAY: Final = 0.02
SYMBOL_ERRORS_PER_PORT_DAY: Final = 0.3

GPU_COUNTERS: Final = ("ecc_sbe_vol_total", "ecc_dbe_vol_total", "sram_ecc_total",
                       "nvlink_crc_flit_errors", "pcie_replays")
PORT_COUNTERS: Final = ("xmit_data", "rcv_data", "symbol_error", "rcv_errors", "link_downed",
                        "link_error_recovery", "xmit_discards")
_BANK: Final = 1 << 20
_GPU_COLUMNS: Final = [s.column for s in c.GPU_SIGNALS]
_GPU_WIDTHS: Final = [np.dtype(s.dtype).itemsize for s in c.GPU_SIGNALS]
_PORT_COLUMNS: Final = [s.column for s in c.PORT_SIGNALS]
_PORT_WIDTHS: Final = [np.dtype(s.dtype).itemsize for s in c.PORT_SIGNALS]


@dataclass
class _Layout:
    """The rack batches for one set of present GPUs."""

    present: np.ndarray[Any, np.dtype[np.bool_]]
    keep: IndexArray | None  # rows to keep (None: every GPU reports)
    rows: int  # GPU rows per scrape
    batches: BatchSet


@dataclass(eq=False)
class Overlay:
    """A fault's effect on a few GPUs or ports, active from ``t0`` until cleared.

    kind ``temp``: adds a temperature ramping from 0 at ``t0`` to ``value`` at ``t1``.
    kind ``throttle``: sets throttle ``bits`` from ``t0``, scales the SM clock by ``clock`` and
      the power by ``power`` and holds the power under ``cap_w`` (0: no cap), reaching them by
      ``t1`` (a step when ``t1 <= t0``); jobs on those GPUs run ``1 / clock`` times slower (the
      straggler effect).
    kind ``counter`` / ``port_counter``: adds about ``rate0`` → ``rate1`` (linear) per scrape to
      ``column`` between ``t0`` and ``t1`` (at least ``floor`` per scrape: 1 is a visible rise,
      0 lets a slow trickle skip scrapes).
    kind ``slow``: no signal of its own; jobs on ``nodes`` run ``1 / clock`` times slower.
    kind ``port_rate``: the ports ``index`` carry ``value`` times their data rate (bandwidth lost
      with no error counter).
    """

    owner: object
    kind: str
    index: IndexArray
    t0: int
    t1: int
    value: float = 0.0
    column: str = ""
    rate0: float = 0.0
    rate1: float = 0.0
    bits: int = 0
    clock: float = 1.0
    nodes: tuple[int, ...] = field(default=())
    power: float = 1.0
    cap_w: float = 0.0
    floor: int = 1

    def factor(self, full: float, t_us: int) -> float:
        """``full`` (a factor reached at ``t1``) as far as the ramp from ``t0`` has come."""
        return 1.0 - (1.0 - full) * self.progress(t_us)

    def progress(self, t_us: int) -> float:
        if self.t1 <= self.t0:
            return 1.0
        return min(1.0, max(0.0, (t_us - self.t0) / (self.t1 - self.t0)))


class Telemetry:
    """The sampled state of every GPU and switch port, and the batches built from it."""

    def __init__(self, topo: Topology, config: SimConfig, rng: np.random.Generator) -> None:
        self.topo = topo
        self.rng = rng
        self.dt_s = config.interval_s
        g, n, p = topo.n_gpus, topo.n_nodes, topo.n_ports
        self.temp_offset = rng.uniform(-4.0, 4.0, g).astype(F4)
        self.power_offset = rng.normal(0.0, 6.0, g).astype(F4)
        self.bank_n = rng.standard_normal(_BANK + max(g, p), dtype=F4)
        self.bank_u = rng.random(_BANK + max(g, p), dtype=F4)
        # Job mapping, written by the scheduler: slot 0 = no job.
        self.gpu_slot = np.zeros(g, dtype=np.int32)
        self.slot_phase = np.zeros(64, dtype=np.int8)
        self.slot_fb = np.zeros(64, dtype=F4)
        # GPU state
        self.present = np.ones(g, dtype=bool)
        self.gpu_ok = np.ones(g, dtype=bool)  # False: fell off the bus
        self.node_up = np.ones(n, dtype=bool)
        self.forced_idle = np.zeros(g, dtype=np.int16)  # > 0: util/power at idle (dead engine)
        self.temp = (36.0 + self.temp_offset).astype(F4)
        self.counters: dict[str, Float64Array] = {k: np.zeros(g) for k in GPU_COUNTERS}
        self.remap_pending = np.zeros(g, dtype=F4)
        self.remap_failure = np.zeros(g, dtype=F4)
        self.extra_temp = np.zeros(g, dtype=F4)
        self.clock_factor = np.ones(g, dtype=F4)
        self.power_factor = np.ones(g, dtype=F4)
        self.power_cap = np.full(g, np.inf, dtype=F4)
        self.fault_bits = np.zeros(g, dtype=np.int64)
        # Port state
        self.port_counters: dict[str, Float64Array] = {k: np.zeros(p) for k in PORT_COUNTERS}
        self.port_state = np.full(p, c.PORT_STATE_ACTIVE, dtype=F4)
        self.port_rate = np.ones(p, dtype=F4)
        self.overlays: list[Overlay] = []
        self._phase = np.zeros(g, dtype=np.int8)
        # Static layout for batches
        kind = topo.port_kind
        self._down = np.flatnonzero(kind == PORT_DOWN)
        self._down_gpu = topo.port_gpu[self._down]
        down_leaf = topo.port_switch[self._down]
        self._down_starts = np.flatnonzero(np.r_[True, down_leaf[1:] != down_leaf[:-1]])
        self._up = np.flatnonzero(kind == PORT_UP)
        up_leaf = topo.port_switch[self._up]
        uplinks_per_leaf = np.bincount(up_leaf, minlength=topo.n_leaves)
        self._up_leaf = up_leaf
        self._up_share = (0.5 / np.maximum(uplinks_per_leaf[up_leaf], 1)).astype(np.float64)
        self._up_peer = topo.port_peer[self._up]
        self._rack_nodes = [topo.node_names[a:b] for a, b in
                            itertools.pairwise(topo.rack_node_start.tolist())]
        self._rack_keys = [c.rack_entity(r) for r in topo.rack_names]
        self._rack_full_counts = [[topo.gpus_per_node] * len(nodes) for nodes in self._rack_nodes]
        self._gpu_index = np.tile(np.arange(topo.gpus_per_node, dtype=np.uint8), n)
        self._ports = self._port_batches()
        self._layout: _Layout | None = None

    # ---- the scheduler's view -------------------------------------------------------------

    def ensure_slots(self, slots: int) -> None:
        if slots + 1 > len(self.slot_phase):
            size = max(slots + 1, 2 * len(self.slot_phase))
            self.slot_phase = np.resize(self.slot_phase, size)
            self.slot_fb = np.resize(self.slot_fb, size)

    def assign(self, node: int, slot: int) -> None:
        """Node ``node`` now runs job slot ``slot`` (-1: no job)."""
        gpn = self.topo.gpus_per_node
        self.gpu_slot[node * gpn:(node + 1) * gpn] = slot + 1

    # ---- fault hooks ----------------------------------------------------------------------

    def add(self, overlay: Overlay) -> Overlay:
        self.overlays.append(overlay)
        return overlay

    def clear(self, owner: object, kind: str | None = None) -> None:
        self.overlays = [o for o in self.overlays
                         if not (o.owner is owner and (kind is None or o.kind == kind))]

    def set_node_up(self, node: int, up: bool) -> None:
        self.node_up[node] = up
        gpn = self.topo.gpus_per_node
        part = slice(node * gpn, (node + 1) * gpn)
        self.present[part] = up & self.gpu_ok[part]

    def set_gpu_ok(self, gpu: int, ok: bool) -> None:
        self.gpu_ok[gpu] = ok
        self.present[gpu] = ok and bool(self.node_up[gpu // self.topo.gpus_per_node])

    def bump(self, column: str, index: IndexArray | list[int], amount: float = 1.0) -> None:
        self.counters[column][index] += amount

    def bump_port(self, column: str, index: IndexArray | list[int], amount: float = 1.0) -> None:
        self.port_counters[column][index] += amount

    def slow_nodes(self, t_us: int) -> Iterator[tuple[int, float, object]]:
        """(node, speed factor < 1, owning fault) for every active slowdown."""
        gpn = self.topo.gpus_per_node
        for o in self.overlays:
            if o.t0 > t_us:
                continue
            if o.kind == "throttle":
                for gpu in o.index:
                    yield int(gpu) // gpn, o.factor(o.clock, t_us), o.owner
            elif o.kind == "slow":
                for node in o.nodes:
                    yield node, o.clock, o.owner

    # ---- one scrape -----------------------------------------------------------------------

    def _noise(self, size: int, count: int, bank: FloatArray) -> list[FloatArray]:
        offsets = self.rng.integers(0, _BANK, size=count)
        return [bank[o:o + size] for o in offsets]

    def _sparse(self, column: dict[str, Float64Array], name: str, per_day: float,
                size: int, low: int = 1, high: int = 2) -> None:
        k = int(self.rng.poisson(per_day * size * self.dt_s / _DAY_S))
        if k:
            where = self.rng.integers(0, size, size=k)
            np.add.at(column[name], where, self.rng.integers(low, high, size=k))

    def _apply_overlays(self, t_us: int) -> None:
        self.extra_temp.fill(0.0)
        self.clock_factor.fill(1.0)
        self.fault_bits.fill(0)
        self.power_factor.fill(1.0)
        self.power_cap.fill(np.inf)
        self.port_rate.fill(1.0)
        for o in self.overlays:
            if t_us < o.t0:
                continue
            if o.kind == "temp":
                self.extra_temp[o.index] += o.value * o.progress(t_us)
            elif o.kind == "throttle":
                clock, power = o.factor(o.clock, t_us), o.factor(o.power, t_us)
                self.clock_factor[o.index] = np.minimum(self.clock_factor[o.index], clock)
                self.power_factor[o.index] = np.minimum(self.power_factor[o.index], power)
                if o.cap_w > 0:
                    self.power_cap[o.index] = np.minimum(self.power_cap[o.index], o.cap_w)
                self.fault_bits[o.index] |= o.bits
            elif o.kind == "port_rate":
                self.port_rate[o.index] = np.minimum(self.port_rate[o.index], o.value)
            elif o.kind in ("counter", "port_counter") and t_us <= o.t1:
                rate = o.rate0 + (o.rate1 - o.rate0) * o.progress(t_us)
                inc = np.maximum(o.floor, self.rng.poisson(rate, size=len(o.index)))
                target = self.counters if o.kind == "counter" else self.port_counters
                target[o.column][o.index] += inc

    def gpu_columns(self, t_us: int) -> dict[str, np.ndarray[Any, Any]]:
        """Every GPU's signals at ``t_us`` (all GPUs, present or not), in contract order."""
        self._apply_overlays(t_us)
        g = self.topo.n_gpus
        phase = self.slot_phase[self.gpu_slot]
        if self.forced_idle.any():
            phase[self.forced_idle > 0] = PHASE_IDLE
        u1, u2 = self._noise(g, 2, self.bank_u)
        n1, n2, n3 = self._noise(g, 3, self.bank_n)
        util = np.rint(_UTIL_LO[phase] + _UTIL_SPAN[phase] * u1)
        power = _POWER_LO[phase] + _POWER_SPAN[phase] * u2 + self.power_offset
        # a capped GPU hovers just under its cap (exact when no fault touches the power)
        power = np.minimum(power * self.power_factor, self.power_cap * (0.98 + 0.02 * u2))
        target = 30.0 + 0.062 * power + self.temp_offset + self.extra_temp
        self.temp += 0.3 * (target - self.temp) + 0.3 * n1
        capped = power > _POWER_CAP_W
        clock = np.rint(_CLOCK[phase] * self.clock_factor + 6.0 * n3 - 60.0 * capped)
        throttle = (self.fault_bits | (capped * c.THROTTLE_POWER_CAP)).astype(np.float64)
        self._sparse(self.counters, "ecc_sbe_vol_total", SBE_PER_GPU_DAY, g)
        self._sparse(self.counters, "pcie_replays", PCIE_REPLAY_PER_GPU_DAY, g, 1, 4)
        self._phase = phase
        return {
            "util_pct": util,
            "sm_clock_mhz": clock,
            "gpu_temp_c": np.rint(self.temp),
            "mem_temp_c": np.rint(self.temp + 4.0 + 0.5 * self.extra_temp + 0.5 * n2),
            "power_w": power,
            "fb_used_mib": self.slot_fb[self.gpu_slot] * (phase != PHASE_IDLE),
            "ecc_sbe_vol_total": self.counters["ecc_sbe_vol_total"],
            "ecc_dbe_vol_total": self.counters["ecc_dbe_vol_total"],
            "sram_ecc_total": self.counters["sram_ecc_total"],
            "row_remap_pending": self.remap_pending,
            "row_remap_failure": self.remap_failure,
            "nvlink_crc_flit_errors": self.counters["nvlink_crc_flit_errors"],
            "pcie_replays": self.counters["pcie_replays"],
            "throttle_reasons": throttle,
        }

    def port_columns(self) -> dict[str, np.ndarray[Any, Any]]:
        """Advance the port counters by one scrape (after ``gpu_columns``) and return them."""
        p = self.topo.n_ports
        up = self.port_state == c.PORT_STATE_ACTIVE
        gpu_live = self.present[self._down_gpu] & up[self._down]
        share = _LINK_SHARE[self._phase[self._down_gpu]] * gpu_live * self.port_rate[self._down]
        n1, n2, n3 = self._noise(max(len(self._down), len(self._up)), 3, self.bank_n)
        n1, n2 = n1[:len(self._down)], n2[:len(self._down)]
        scale = _LINK_WORDS_PER_S * self.dt_s
        x_down = np.rint(share * scale * (1.0 + 0.05 * n1))
        r_down = np.rint(share * scale * (1.0 + 0.05 * n2))
        pc = self.port_counters
        pc["xmit_data"][self._down] += x_down
        pc["rcv_data"][self._down] += r_down
        if len(self._up):
            leaf_x = np.add.reduceat(x_down, self._down_starts)
            leaf_r = np.add.reduceat(r_down, self._down_starts)
            live = up[self._up] & up[self._up_peer]
            jitter = 1.0 + 0.05 * n3[:len(self._up)]
            x_up = np.rint(leaf_x[self._up_leaf] * self._up_share * jitter * live)
            r_up = np.rint(leaf_r[self._up_leaf] * self._up_share * jitter * live)
            pc["xmit_data"][self._up] += x_up
            pc["rcv_data"][self._up] += r_up
            pc["xmit_data"][self._up_peer] += r_up
            pc["rcv_data"][self._up_peer] += x_up
        self._sparse(pc, "symbol_error", SYMBOL_ERRORS_PER_PORT_DAY, p, 1, 6)
        return {**pc, "link_state": self.port_state}

    # ---- batches --------------------------------------------------------------------------

    def _gpu_layout(self) -> _Layout:
        """Rack batches for the current set of present GPUs (rebuilt only when it changed)."""
        if self._layout is not None and np.array_equal(self._layout.present, self.present):
            return self._layout
        topo = self.topo
        gpn = topo.gpus_per_node
        node_start = topo.rack_node_start
        keep: IndexArray | None = None
        if self.present.all():
            starts = (node_start * gpn).tolist()
            counts = self._rack_full_counts
        else:
            keep = np.flatnonzero(self.present)
            per_node = self.present.reshape(-1, gpn).sum(axis=1)
            cum = np.r_[0, np.cumsum(per_node)]
            starts = cum[node_start].tolist()
            full_rows = np.diff(node_start) * gpn
            counts = list(self._rack_full_counts)
            for r in np.flatnonzero(np.diff(cum[node_start]) != full_rows).tolist():
                counts[r] = per_node[node_start[r]:node_start[r + 1]].tolist()
        # A rack whose nodes are all down reports nothing.
        racks = [(r, a, b) for r, (a, b) in enumerate(itertools.pairwise(starts)) if b > a]
        index = (self._gpu_index if keep is None else self._gpu_index[keep]).tobytes()
        nodes = self._rack_nodes

        def make(i: int, columns: dict[str, bytes]) -> c.Payload:
            r, a, b = racks[i]
            return c.gpu_payload(nodes[r], counts[r], index[a:b], columns)

        batches = BatchSet(c.GpuSampled.TYPE, _GPU_COLUMNS, _GPU_WIDTHS,
                           [self._rack_keys[r] for r, _, _ in racks],
                           [(a, b) for _, a, b in racks], make)
        rows = sum(b - a for _, a, b in racks)
        self._layout = _Layout(self.present.copy(), keep, rows, batches)
        return self._layout

    def _port_batches(self) -> BatchSet:
        """Switch batches: the port layout never changes (a down port still reports)."""
        topo = self.topo
        spans = list(itertools.pairwise(topo.port_start.tolist()))
        ports = topo.port_number.astype("<u2").tobytes()
        names = topo.switch_names

        def make(s: int, columns: dict[str, bytes]) -> c.Payload:
            a, b = spans[s]
            return c.port_payload([names[s]], [b - a], ports[2 * a:2 * b], columns)

        return BatchSet(c.PortSampled.TYPE, _PORT_COLUMNS, _PORT_WIDTHS,
                        [c.switch_entity(name) for name in names], spans, make)

    def gpu_batches(
        self, t_us: int, columns: dict[str, np.ndarray[Any, Any]], ids: Iterator[str],
    ) -> tuple[list[c.Envelope], int]:
        """One ``gpu.sampled`` per rack (keyed ``rack:<rack>``); absent GPUs have no row."""
        layout = self._gpu_layout()
        keep = layout.keep
        data = [np.ascontiguousarray(columns[s.column] if keep is None else columns[s.column][keep],
                                     dtype=s.dtype).tobytes() for s in c.GPU_SIGNALS]
        return layout.batches.events(t_us, data, ids), layout.rows

    def port_batches(
        self, t_us: int, columns: dict[str, np.ndarray[Any, Any]], ids: Iterator[str],
    ) -> list[c.Envelope]:
        """One ``port.sampled`` per switch (keyed ``switch:<name>``)."""
        data = [np.ascontiguousarray(columns[s.column], dtype=s.dtype).tobytes()
                for s in c.PORT_SIGNALS]
        return self._ports.events(t_us, data, ids)
