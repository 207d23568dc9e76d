"""The modeled cluster's topology: regions, virtual clusters, racks, nodes, GPUs and the fabric.

Layout (docs/faults.md): nodes ``n00001``… fill racks ``r0001``… (``nodes_per_rack`` each, one PDU
and one cooling zone per rack); ``racks_per_su`` racks form a scalable unit (SU) with one rail leaf
switch per NIC index (``leaf-su01-0``…), rail-optimized: NIC *i* of every node in the SU is cabled
to leaf *i*, port = the node's position in the SU + 1. Each leaf has one uplink per spine of its
region (ports after the ``nodes_per_su`` downlink ports); each spine has one port per leaf of its
region. Regions partition SUs; virtual clusters partition the racks of a region; a share of each
virtual cluster's nodes are spares.

Everything is indexed by dense integers (node, GPU = node * gpus_per_node + index, rack, switch,
port) so telemetry can live in numpy arrays; names are built once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fleetlog.generators.config import SimConfig, SimulationError
from fleetlog.ingest import contract as c

GPU_MODEL = "NVIDIA H100 80GB HBM3"
PORT_DOWN, PORT_UP, PORT_SPINE = 0, 1, 2
# DGX H100 PCI bus ids of GPUs 0..7 (kernel XID lines name the GPU by bus id).
_PCI_BUSES = (0x18, 0x2A, 0x3A, 0x5D, 0x9A, 0xAB, 0xBA, 0xDB)

IntArray = np.ndarray[Any, np.dtype[np.int32]]


def pci_bus_id(index: int) -> str:
    """The kernel log's form (``0000:18:00``), as in ``NVRM: Xid (PCI:0000:18:00): 79, ...``."""
    bus = _PCI_BUSES[index] if index < len(_PCI_BUSES) else 0xE0 + index
    return f"0000:{bus:02x}:00"


def _split(count: int, parts: int) -> list[int]:
    """Owner (0..parts-1) of each of ``count`` items, contiguous and balanced."""
    return [i * parts // count for i in range(count)]


@dataclass
class Topology:
    gpus_per_node: int
    nodes_per_su: int
    node_names: list[str]
    node_rack: IntArray
    node_su: IntArray
    node_vc: IntArray
    node_spare: np.ndarray[Any, np.dtype[np.bool_]]
    rack_names: list[str]
    rack_node_start: IntArray  # len racks + 1
    rack_region: list[int]
    rack_vc: list[int]
    su_node_start: IntArray  # len SUs + 1
    region_names: list[str]
    vc_names: list[str]
    vc_region: list[int]
    switch_names: list[str]  # leaves first (index su * gpus_per_node + rail), then spines
    switch_tier: list[str]
    switch_region: list[int]
    n_leaves: int
    port_start: IntArray  # per switch, len switches + 1
    port_number: np.ndarray[Any, np.dtype[np.uint16]]
    port_kind: np.ndarray[Any, np.dtype[np.int8]]
    port_switch: IntArray
    port_gpu: IntArray  # downlinks: the GPU whose rail NIC is cabled here, else -1
    port_peer: IntArray  # uplink <-> spine port at the other end of the cable, else -1
    down_port: IntArray  # (nodes, gpus_per_node) -> port index of that NIC's leaf port

    # ---- sizes and names -------------------------------------------------------------------

    @property
    def n_nodes(self) -> int:
        return len(self.node_names)

    @property
    def n_gpus(self) -> int:
        return self.n_nodes * self.gpus_per_node

    @property
    def n_racks(self) -> int:
        return len(self.rack_names)

    @property
    def n_sus(self) -> int:
        return len(self.su_node_start) - 1

    @property
    def n_ports(self) -> int:
        return len(self.port_number)

    def rack_nodes(self, rack: int) -> range:
        return range(int(self.rack_node_start[rack]), int(self.rack_node_start[rack + 1]))

    def su_nodes(self, su: int) -> range:
        return range(int(self.su_node_start[su]), int(self.su_node_start[su + 1]))

    def switch_ports(self, switch: int) -> range:
        return range(int(self.port_start[switch]), int(self.port_start[switch + 1]))

    def gpu_entity(self, gpu: int) -> str:
        node, index = divmod(gpu, self.gpus_per_node)
        return c.gpu_entity(self.node_names[node], index)

    def node_entity(self, node: int) -> str:
        return c.node_entity(self.node_names[node])

    def nic_entity(self, node: int, rail: int) -> str:
        return c.nic_entity(self.node_names[node], rail)

    def link_entity(self, port: int) -> str:
        return c.link_entity(self.switch_names[int(self.port_switch[port])],
                             int(self.port_number[port]))

    def storage_name(self, vc: int) -> str:
        return f"ckpt-{self.vc_names[vc]}"

    # ---- inventory ------------------------------------------------------------------------

    def inventory(self) -> list[c.Payload]:
        """Racks, switches, nodes (each with its GPUs) and cables, as ``*.registered`` payloads
        (in that order)."""
        out: list[c.Payload] = []
        for r, name in enumerate(self.rack_names):
            out.append(c.RackRegistered(rack=name, region=self.region_names[self.rack_region[r]],
                                        pdu=f"pdu-{name}", cooling_zone=f"cz-{name}"))
        for s, name in enumerate(self.switch_names):
            out.append(c.SwitchRegistered(switch=name, tier=self.switch_tier[s],
                                          region=self.region_names[self.switch_region[s]]))
        for n, name in enumerate(self.node_names):
            rack = int(self.node_rack[n])
            out.append(c.NodeRegistered(
                node=name, rack=self.rack_names[rack],
                region=self.region_names[self.rack_region[rack]],
                vcluster=self.vc_names[int(self.node_vc[n])], gpu_count=self.gpus_per_node,
                gpu_model=GPU_MODEL, nic_count=self.gpus_per_node,
                spare=bool(self.node_spare[n]),
            ))
            # Each GPU's PCI address, as nvidia-smi would list it: the map from a kernel XID
            # line's address to the GPU (analysis reads it when an XID carries no index).
            out.extend(c.GpuRegistered(node=name, gpu=g, model=GPU_MODEL,
                                       pci_bus_id=c.normalize_pci_bus_id(pci_bus_id(g)))
                       for g in range(self.gpus_per_node))
        for p in range(self.n_ports):
            switch = self.switch_names[int(self.port_switch[p])]
            gpu = int(self.port_gpu[p])
            if gpu >= 0:
                node, rail = divmod(gpu, self.gpus_per_node)
                peer = self.nic_entity(node, rail)
            else:
                peer = c.switch_entity(self.switch_names[int(self.port_switch[self.port_peer[p]])])
            out.append(c.LinkRegistered(switch=switch, port=int(self.port_number[p]), peer=peer))
        return out


def build_topology(config: SimConfig) -> Topology:
    """The cluster described by ``config`` (deterministic: no randomness in the layout)."""
    gpn, npr = config.gpus_per_node, config.nodes_per_rack
    n_nodes = config.nodes
    n_racks = -(-n_nodes // npr)
    n_sus = -(-n_racks // config.racks_per_su)
    nodes_per_su = npr * config.racks_per_su
    if config.regions > n_sus:
        raise SimulationError(
            f"{config.regions} regions need at least {config.regions} scalable units of "
            f"{nodes_per_su} nodes: raise --nodes or lower --regions"
        )
    su_region = _split(n_sus, config.regions)
    rack_region = [su_region[r // config.racks_per_su] for r in range(n_racks)]
    n_vcs = config.vclusters if config.vclusters is not None else min(2, n_racks)
    if n_vcs < config.regions:
        raise SimulationError(f"--vclusters {n_vcs} is fewer than --regions {config.regions}")
    vc_region = _split(n_vcs, config.regions)
    rack_vc = [0] * n_racks
    for region in range(config.regions):
        vcs = [v for v in range(n_vcs) if vc_region[v] == region]
        racks = [r for r in range(n_racks) if rack_region[r] == region]
        if len(racks) < len(vcs):
            raise SimulationError(
                f"region {region} has {len(racks)} racks for {len(vcs)} virtual clusters: "
                "raise --nodes or lower --vclusters"
            )
        for pos, owner in enumerate(_split(len(racks), len(vcs))):
            rack_vc[racks[pos]] = vcs[owner]

    node_rack = np.arange(n_nodes, dtype=np.int32) // npr
    node_vc = np.asarray([rack_vc[r] for r in node_rack], dtype=np.int32)
    node_spare = np.zeros(n_nodes, dtype=bool)
    for vc in range(n_vcs):
        members = np.flatnonzero(node_vc == vc)
        k = round(config.spare_share * len(members))
        if config.spare_share > 0 and len(members) >= 2:
            k = max(1, k)
        for j in range(k):  # evenly spread through the virtual cluster
            node_spare[members[(j + 1) * len(members) // k - 1]] = True

    region_sus = [[s for s in range(n_sus) if su_region[s] == g] for g in range(config.regions)]
    spines_per_region = [
        config.spines if config.spines is not None else min(8, max(2, len(sus)))
        for sus in region_sus
    ]
    switch_names: list[str] = []
    switch_tier: list[str] = []
    switch_region: list[int] = []
    for su in range(n_sus):
        for rail in range(gpn):
            switch_names.append(f"leaf-su{su + 1:02d}-{rail}")
            switch_tier.append("leaf")
            switch_region.append(su_region[su])
    n_leaves = len(switch_names)
    spine_index: list[list[int]] = []
    for region, count in enumerate(spines_per_region):
        spine_index.append([])
        for _ in range(count):
            spine_index[region].append(len(switch_names))
            switch_names.append(f"spine-{len(switch_names) - n_leaves:02d}")
            switch_tier.append("spine")
            switch_region.append(region)

    su_node_start = np.minimum(np.arange(n_sus + 1, dtype=np.int32) * nodes_per_su, n_nodes)
    port_switch: list[int] = []
    port_number: list[int] = []
    port_kind: list[int] = []
    port_gpu: list[int] = []
    port_start = [0]
    down_port = np.full((n_nodes, gpn), -1, dtype=np.int32)
    uplink: dict[tuple[int, int], int] = {}  # (leaf, spine switch) -> port index
    for su in range(n_sus):
        region = su_region[su]
        for rail in range(gpn):
            leaf = su * gpn + rail
            for node in range(int(su_node_start[su]), int(su_node_start[su + 1])):
                down_port[node, rail] = len(port_number)
                port_switch.append(leaf)
                port_number.append(node - int(su_node_start[su]) + 1)
                port_kind.append(PORT_DOWN)
                port_gpu.append(node * gpn + rail)
            for j, spine in enumerate(spine_index[region]):
                uplink[(leaf, spine)] = len(port_number)
                port_switch.append(leaf)
                port_number.append(nodes_per_su + j + 1)
                port_kind.append(PORT_UP)
                port_gpu.append(-1)
            port_start.append(len(port_number))
    port_peer = [-1] * len(port_number)
    for region, spines in enumerate(spine_index):
        leaves = [su * gpn + rail for su in region_sus[region] for rail in range(gpn)]
        for spine in spines:
            for pos, leaf in enumerate(leaves):
                here = len(port_number)
                port_switch.append(spine)
                port_number.append(pos + 1)
                port_kind.append(PORT_SPINE)
                port_gpu.append(-1)
                port_peer.append(uplink[(leaf, spine)])
                port_peer[uplink[(leaf, spine)]] = here
            port_start.append(len(port_number))

    return Topology(
        gpus_per_node=gpn,
        nodes_per_su=nodes_per_su,
        node_names=[f"n{i + 1:05d}" for i in range(n_nodes)],
        node_rack=node_rack,
        node_su=(node_rack // config.racks_per_su).astype(np.int32),
        node_vc=node_vc,
        node_spare=node_spare,
        rack_names=[f"r{i + 1:04d}" for i in range(n_racks)],
        rack_node_start=np.minimum(np.arange(n_racks + 1, dtype=np.int32) * npr, n_nodes),
        rack_region=rack_region,
        rack_vc=rack_vc,
        su_node_start=su_node_start,
        region_names=[f"region{g}" for g in range(config.regions)],
        vc_names=[f"vc{v}" for v in range(n_vcs)],
        vc_region=vc_region,
        switch_names=switch_names,
        switch_tier=switch_tier,
        switch_region=switch_region,
        n_leaves=n_leaves,
        port_start=np.asarray(port_start, dtype=np.int32),
        port_number=np.asarray(port_number, dtype=np.uint16),
        port_kind=np.asarray(port_kind, dtype=np.int8),
        port_switch=np.asarray(port_switch, dtype=np.int32),
        port_gpu=np.asarray(port_gpu, dtype=np.int32),
        port_peer=np.asarray(port_peer, dtype=np.int32),
        down_port=down_port,
    )
