"""Topology: racks, nodes, switches and cables, from the inventory events."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar

from fleetlog.analysis.projections.projector import Handler, Projector
from fleetlog.ingest import contract as c


@dataclass
class NodeInfo:
    node: str
    rack: str
    region: str
    vcluster: str
    gpu_count: int
    nic_count: int
    spare: bool


@dataclass
class Topology:
    racks: dict[str, dict[str, str]] = field(default_factory=dict)  # rack -> pdu, cooling_zone..
    nodes: dict[str, NodeInfo] = field(default_factory=dict)
    switches: dict[str, str] = field(default_factory=dict)  # switch -> tier
    links: dict[tuple[str, int], str] = field(default_factory=dict)  # (switch, port) -> peer

    # Derived look-ups (cheap to recompute; not part of equality).
    def rack_nodes(self, rack: str) -> list[str]:
        return sorted(n for n, info in self.nodes.items() if info.rack == rack)

    def rack_of(self, node: str) -> str | None:
        info = self.nodes.get(node)
        return info.rack if info else None

    def link_peer(self, switch: str, port: int) -> str | None:
        return self.links.get((switch, port))

    def leaf_node_ports(self) -> dict[str, dict[int, str]]:
        """leaf switch -> {port: node} for ports facing a node's NIC."""
        out: dict[str, dict[int, str]] = {}
        for (sw, port), peer in self.links.items():
            if peer.startswith("nic:"):
                out.setdefault(sw, {})[port] = peer[4:].split("/", 1)[0]
        return out


class TopologyProjector(Projector[Topology]):
    def rack(self, payload: c.RackRegistered, event: c.Envelope) -> None:
        self.state.racks[payload.rack] = {
            "region": payload.region, "pdu": payload.pdu, "cooling_zone": payload.cooling_zone,
        }

    def node(self, payload: c.NodeRegistered, event: c.Envelope) -> None:
        self.state.nodes[payload.node] = NodeInfo(
            node=payload.node, rack=payload.rack, region=payload.region,
            vcluster=payload.vcluster, gpu_count=payload.gpu_count,
            nic_count=payload.nic_count, spare=payload.spare,
        )

    def switch(self, payload: c.SwitchRegistered, event: c.Envelope) -> None:
        self.state.switches[payload.switch] = payload.tier

    def link(self, payload: c.LinkRegistered, event: c.Envelope) -> None:
        self.state.links[(payload.switch, payload.port)] = payload.peer

    HANDLERS: ClassVar[dict[type[c.Payload], Handler]] = {
        c.RackRegistered: rack, c.NodeRegistered: node, c.SwitchRegistered: switch,
        c.LinkRegistered: link,
    }


def fold_topology(events: Iterable[c.Envelope], start: Topology | None = None) -> Topology:
    return TopologyProjector(copy.deepcopy(start) if start is not None else Topology()).fold(
        events)
