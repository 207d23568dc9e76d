"""Fixtures for the generator tests: cached small simulations and column views of their events."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from fleetlog.generators.config import SimConfig
from fleetlog.generators.simulator import Simulator
from fleetlog.ingest import contract as c

# A small cluster with two scalable units (so a leaf switch's blast radius has a clean outside).
SMALL = {"nodes": 64, "hours": 2.0}


@dataclass
class Run:
    sim: Simulator
    events: list[c.Envelope]
    _frames: dict[str, Any] = field(default_factory=dict)

    def of(self, *types: type[c.Payload]) -> list[c.Envelope]:
        return [e for e in self.events if isinstance(e.payload, types)]

    @property
    def truth(self) -> list[c.FaultInjected]:
        return [e.payload for e in self.of(c.FaultInjected)]  # type: ignore[misc]

    def node_index(self, name: str) -> int:
        return self.sim.topo.node_names.index(name)

    def gpu(self) -> dict[str, np.ndarray]:
        """Every GPU sample row: ts, node (index), gpu, and one array per signal."""
        if "gpu" not in self._frames:
            self._frames["gpu"] = _frame(self.of(c.GpuSampled), "nodes", "gpu_count", "gpu",
                                         "u1", c.GPU_SIGNALS, self.node_index)
        return self._frames["gpu"]

    def ports(self) -> dict[str, np.ndarray]:
        """Every port sample row: ts, switch (index), port, and one array per counter."""
        if "ports" not in self._frames:
            names = self.sim.topo.switch_names
            self._frames["ports"] = _frame(self.of(c.PortSampled), "switches", "port_count",
                                           "port", "<u2", c.PORT_SIGNALS, names.index)
        return self._frames["ports"]

    def series(self, frame: dict[str, np.ndarray], column: str, **where: int) -> tuple[
            np.ndarray, np.ndarray]:
        mask = np.ones(len(frame["ts"]), dtype=bool)
        for key, value in where.items():
            mask &= frame[key] == value
        order = np.argsort(frame["ts"][mask], kind="stable")
        return frame["ts"][mask][order], frame[column][mask][order]


def _frame(events: list[c.Envelope], entity: str, count: str, index: str, dtype: str,
           signals: tuple[c.Signal, ...], lookup: Callable[[str], int]) -> dict[str, np.ndarray]:
    ts, who, idx = [], [], []
    cols: dict[str, list[np.ndarray]] = {s.column: [] for s in signals}
    ids = {}
    for event in events:
        p: Any = event.payload
        names = getattr(p, entity)
        counts = getattr(p, count)
        rows = int(sum(counts))
        ts.append(np.full(rows, event.time_us, dtype=np.int64))
        for name in names:
            ids.setdefault(name, lookup(name))
        who.append(np.repeat([ids[n] for n in names], counts).astype(np.int64))
        idx.append(np.frombuffer(getattr(p, index), dtype=dtype).astype(np.int64))
        for s in signals:
            cols[s.column].append(np.frombuffer(p.columns[s.column], dtype=s.dtype))
    key = "node" if entity == "nodes" else "switch"
    out = {"ts": np.concatenate(ts), key: np.concatenate(who), index: np.concatenate(idx)}
    out.update({k: np.concatenate(v).astype(np.float64) for k, v in cols.items()})
    return out


_CACHE: dict[tuple[Any, ...], Run] = {}


@pytest.fixture(scope="session")
def simulate_run() -> Callable[..., Run]:
    """``simulate_run(scenario, **config)``: run once per distinct config, keep every event."""

    def run(scenario: str, **overrides: Any) -> Run:
        params = {**SMALL, "seed": 3, "scenario": scenario, **overrides}
        key = tuple(sorted(params.items()))
        if key not in _CACHE:
            sim = Simulator(SimConfig(**params))
            events = [e for chunk in sim.chunks() for e in chunk]
            _CACHE[key] = Run(sim, events)
        return _CACHE[key]

    return run
