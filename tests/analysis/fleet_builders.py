"""A tiny hand-made cluster for unit tests: a few nodes, GPU scrapes, ports, jobs, as contract
events (no generator needed). Each test bends one signal and checks what analysis makes of it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fleetlog.analysis.diagnosis import Incident
from fleetlog.analysis.pipeline import analyze_store
from fleetlog.ingest import contract as c
from fleetlog.ingest.store import open_store
from fleetlog.ingest.store.writer import land

T0 = 1_767_571_200_000_000  # 2026-01-05T00:00:00Z
STEP = 10_000_000  # 10 s scrapes
SRC = "test"

Hook = Callable[[int, str, int, dict[str, float]], bool]


@dataclass
class Cluster:
    nodes: int = 8
    racks_of: int = 4
    scrapes: int = 120
    gpus: int = 8
    # Node-facing ports count data words (xmit_data / rcv_data) at a steady rate per scrape,
    # which port hooks may change through values["xmit_rate"] / values["rcv_rate"].
    traffic: bool = False
    events: list[c.Envelope] = field(default_factory=list)
    # (scrape, node, gpu, values) -> keep row? values may be edited in place.
    hooks: list[Hook] = field(default_factory=list)
    port_hooks: list[Callable[[int, str, int, dict[str, float]], None]] = field(
        default_factory=list)

    def name(self, n: int) -> str:
        return f"n{n + 1:05d}"

    def rack(self, n: int) -> str:
        return f"r{n // self.racks_of + 1:04d}"

    def t(self, scrape: int) -> int:
        return T0 + scrape * STEP

    def add(self, payload: c.Payload, t: int) -> None:
        self.events.append(c.make_event(payload, time_us=t, source=SRC))

    def build(self) -> list[c.Envelope]:
        out = list(self.events)
        inv: list[c.Payload] = []
        for r in sorted({self.rack(n) for n in range(self.nodes)}):
            inv.append(c.RackRegistered(rack=r, region="reg0", pdu="p", cooling_zone="z"))
        for leaf in range(self.gpus):
            inv.append(c.SwitchRegistered(switch=f"leaf-su01-{leaf}", tier="leaf", region="reg0"))
        for n in range(self.nodes):
            inv.append(c.NodeRegistered(node=self.name(n), rack=self.rack(n), region="reg0",
                                        vcluster="vc0", gpu_count=self.gpus,
                                        gpu_model="H100", nic_count=self.gpus))
            for i in range(self.gpus):
                inv.append(c.LinkRegistered(switch=f"leaf-su01-{i}", port=n + 1,
                                            peer=c.nic_entity(self.name(n), i)))
        out.extend(c.make_event(p, time_us=T0 - STEP, source=SRC) for p in inv)
        rng = np.random.default_rng(0)
        sbe = np.zeros((self.nodes, self.gpus))
        words = np.zeros((2, self.gpus, self.nodes))  # data words sent / received so far
        for s in range(self.scrapes):
            for r in sorted({self.rack(n) for n in range(self.nodes)}):
                members = [n for n in range(self.nodes) if self.rack(n) == r]
                names, counts, gpu_idx = [], [], []
                cols: dict[str, list[float]] = {k: [] for k in (
                    "util_pct", "gpu_temp_c", "power_w", "sm_clock_mhz", "ecc_sbe_vol_total",
                    "ecc_dbe_vol_total", "sram_ecc_total", "row_remap_pending",
                    "row_remap_failure", "nvlink_crc_flit_errors", "pcie_replays",
                    "throttle_reasons")}
                for n in members:
                    kept = 0
                    for g in range(self.gpus):
                        values = {
                            "util_pct": 97.0, "gpu_temp_c": 65 + g * 0.5 + rng.normal(0, 0.7),
                            "power_w": 650.0, "sm_clock_mhz": 1980.0,
                            "ecc_sbe_vol_total": sbe[n, g], "ecc_dbe_vol_total": 0.0,
                            "sram_ecc_total": 0.0, "row_remap_pending": 0.0,
                            "row_remap_failure": 0.0, "nvlink_crc_flit_errors": 0.0,
                            "pcie_replays": 0.0, "throttle_reasons": 0.0,
                        }
                        if all(h(s, self.name(n), g, values) for h in self.hooks):
                            kept += 1
                            gpu_idx.append(g)
                            for k in cols:
                                cols[k].append(values[k])
                    if kept:
                        names.append(self.name(n))
                        counts.append(kept)
                if names:
                    out.append(c.make_event(c.gpu_batch(names, counts, gpu_idx, cols),
                                            time_us=self.t(s), source=SRC,
                                            key=c.rack_entity(r)))
            sw_names, pcounts, ports = [], [], []
            pcols: dict[str, list[float]] = {k: [] for k in (
                "symbol_error", "rcv_errors", "link_downed", "link_error_recovery",
                "link_state", *(("xmit_data", "rcv_data") if self.traffic else ()))}
            for leaf in range(self.gpus):
                sw = f"leaf-su01-{leaf}"
                sw_names.append(sw)
                pcounts.append(self.nodes)
                for n in range(self.nodes):
                    ports.append(n + 1)
                    values = {"symbol_error": 0.0, "rcv_errors": 0.0, "link_downed": 0.0,
                              "link_error_recovery": 0.0, "link_state": 4.0,
                              "xmit_rate": 1e9, "rcv_rate": 1e9}
                    for h in self.port_hooks:
                        h(s, sw, n + 1, values)
                    if self.traffic:
                        words[0, leaf, n] += values["xmit_rate"]
                        words[1, leaf, n] += values["rcv_rate"]
                        values["xmit_data"], values["rcv_data"] = words[:, leaf, n]
                    for k in pcols:
                        pcols[k].append(values[k])
            out.append(c.make_event(c.port_batch(sw_names, pcounts, ports, pcols),
                                    time_us=self.t(s), source=SRC))
        return sorted(out, key=lambda e: (e.time_us, e.id))


def job(cluster: Cluster, name: str, nodes: list[int], *, steps_until: int | None = None,
        fail_at: int | None = None, exit_code: int = 1, reason: str = "RuntimeError",
        loss_nan_at: int | None = None) -> None:
    """A job on ``nodes`` reporting a step every scrape until ``steps_until`` (or its failure)."""
    names = [cluster.name(n) for n in nodes]
    cluster.add(c.JobSubmitted(job=name, gpus=8 * len(nodes), vcluster="vc0"), T0 - STEP)
    cluster.add(c.JobPlaced(job=name, nodes=names, vcluster="vc0"), T0 - STEP + 1)
    cluster.add(c.JobStarted(job=name, step=0), T0 - STEP + 2)
    last = min(x for x in (steps_until, fail_at, cluster.scrapes) if x is not None)
    for s in range(last):
        loss = 2.0 - s * 0.001
        if loss_nan_at is not None and s >= loss_nan_at:
            loss = float("nan")
        cluster.add(c.JobStepReported(job=name, step=s + 1, step_time_s=9.5, tokens_per_s=1e6,
                                      loss=loss), cluster.t(s) + 5_000_000)
    if fail_at is not None:
        cluster.add(c.JobFailed(job=name, step=last, exit_code=exit_code, reason=reason),
                    cluster.t(fail_at) + 6_000_000)


def analyze_cluster(cluster: Cluster, db_path: Path) -> list[Incident]:
    """Land ``cluster`` in a store at ``db_path`` and return the incidents analysis finds."""
    land(db_path, cluster.build())
    con = open_store(db_path)
    try:
        return analyze_store(con).incidents
    finally:
        con.close()


def only(incidents: list[Incident]) -> Incident:
    """The one incident (the assertion lists them all when there is not exactly one)."""
    assert len(incidents) == 1, [(i.category, i.root) for i in incidents]
    return incidents[0]
