"""Diagnosis: findings -> incidents with ranked root-cause candidates.

Findings are grouped by topology and time, widest scope first, so a wide failure is never
mistaken for many small ones:

1. rack: every (or nearly every) node of one rack stops in the same scrape -> ``rack_power``;
   several nodes of one rack thermally throttled or hot together -> ``cooling``.
2. leaf switch: most node-facing ports of one leaf go down within minutes -> ``network``
   rooted at ``switch:<leaf>`` (with the errors several of its ports showed in the hour before).
3. storage: checkpoints many times slower than usual in one virtual cluster -> ``storage``.
4. node: maintenance / went down / stopped reporting with no GPU error first ->
   ``host_maintenance`` or ``host_hw``; stopped reporting while it shows life (kernel lines, job
   steps, port traffic) -> ``telemetry_gap`` (the exporter or collector, not the node).
5. GPU: XIDs, ECC counters, row remapping, NVLink errors, absence, heat on one GPU -> the GPU
   categories, scored by which signals are present.
6. link: errors and flaps on one port -> ``network`` (the cable) or ``nic`` (receive errors,
   then down for good).
6b. parts slower than their peers (the learned detector, when it runs): evidence of an open
   incident on their node or switch, else a gray failure of the GPU, node or link.
7. job: what is left of a job's own signals, once every job failure that a hardware incident on
   the job's nodes explains has been attributed to it -> ``sdc`` (loss NaN/spike), ``nccl_hang``
   (no step progress, then the watchdog), or ``software`` (all ranks exit at once).

A GPU's or a link's symptoms that recur before it has been healthy for ``HOLD_DOWN`` (6 h) join
its open incident: one incident per fault episode, not one per burst.

Each incident keeps its findings (the evidence), the entities they touch (``affected``), and a
ranked list of (category, entity, score) candidates whose scores sum to 1.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Final

from fleetlog.analysis.context import US, AnalysisContext, Finding
from fleetlog.ingest import contract as c

MIN: Final = 60 * US
# One incident per fault episode: a GPU's or a link's symptoms that come back (a flapping cable's
# next burst, an XID again) join its open incident until the entity has been healthy this long.
# Six hours: longer than the quiet between a bad cable's bursts or a GPU's repeated XIDs, short
# enough that a part that fails again after a repair is a new incident the same day.
HOLD_DOWN: Final = 6 * 60 * MIN
GPU_KINDS: Final = frozenset({
    "xid", "sbe_rising", "sram_rising", "nvlink_rising", "dbe", "row_remap_pending",
    "row_remap_failure", "gpu_absent", "gpu_hot", "thermal_throttle",
    "gpu_slow", "gpu_power_low", "pcie_replays", "hw_slowdown",
})
# Fail-slow evidence (analysis/detectors/peers.py, port_rates.py): a part slower than its peers.
GPU_SLOW_KINDS: Final = frozenset({"gpu_slow", "gpu_power_low", "hw_slowdown"})
# A node whose NIC ports all carry less than the same rails of its job (detectors/rail_rates.py).
NODE_PORTS_KIND: Final = "node_ports_slow"
NODE_SLOW_KINDS: Final = frozenset({"node_slow", "node_throttled", NODE_PORTS_KIND})
# A slowed job's weak signal on one GPU (analysis/detectors/job_parts.py).
JOB_PART_KIND: Final = "gpu_slows_job"
PORT_KINDS: Final = frozenset({"port_errors", "rcv_errors", "link_down", "port_slow"})
NODE_KINDS: Final = frozenset({"node_silent", "node_down", "maintenance", "node_fail"})
JOB_KINDS: Final = frozenset({"job_failed", "job_stalled", "loss_anomaly"})
# A dying leaf switch loses its ports within minutes, not always in one scrape: link-down starts
# of several nodes 19, 77 and 252 s apart in the InfiniteHBD trace (../shared/data/faults).
SWITCH_DOWN_SPREAD: Final = 5 * MIN
# Errors on this many of its ports within this long before it died are the switch's warning.
SWITCH_WARNING: Final = 60 * MIN
SWITCH_WARNING_PORTS: Final = 3
HARD_KINDS: Final = frozenset({
    "xid", "dbe", "row_remap_failure", "gpu_absent", "node_silent", "node_down", "maintenance",
    "link_down", "node_fail",
})
_HARDWARE_REASON: Final = re.compile(
    r"cuda error|\becc\b|network error|node failure|\bgsp\b|drained|xid|nvlink", re.I)
SLOWDOWNS: Final = frozenset({"gpu_thermal", "cooling", "storage"})
# The learned detector's findings (detectors.learned): a part slower than its peers.
OUTLIER_KINDS: Final = frozenset({"gpu_outlier", "node_outlier", "port_outlier"})
MAINTENANCE_WORDS: Final = ("reboot", "mainten", "drain", "upgrade", "firmware")


@dataclass
class Incident:
    category: str
    root: str
    start_us: int  # the first symptom among its findings
    detect_us: int  # when the opening rule could first fire
    end_us: int
    candidates: list[tuple[str, str, float]]  # (category, entity, score), best first
    findings: list[Finding] = field(default_factory=list)
    affected: set[str] = field(default_factory=set)
    nodes: set[str] = field(default_factory=set)  # footprint for attributing job failures
    calibrated: float | None = None  # the top score mapped to observed precision (calibration)

    @property
    def incident_id(self) -> str:
        text = f"{self.category}|{self.root}|{self.start_us}"
        return "inc-" + hashlib.blake2b(text.encode(), digest_size=8).hexdigest()

    @property
    def confidence(self) -> float:
        """How sure: the calibrated share of such incidents that were right when there is one
        (``analysis.calibration``), else the top candidate's raw score."""
        if self.calibrated is not None:
            return self.calibrated
        return self.candidates[0][2] if self.candidates else 0.0

    def add(self, finding: Finding) -> None:
        self.findings.append(finding)
        self.affected.add(finding.entity)
        self.end_us = max(self.end_us, finding.end_us)
        if finding.node:
            self.affected.add(c.node_entity(finding.node))


def _ranked(scores: dict[tuple[str, str], float]) -> list[tuple[str, str, float]]:
    total = sum(v for v in scores.values() if v > 0)
    if total <= 0:
        return []
    ranked = sorted(((cat, ent, v / total) for (cat, ent), v in scores.items() if v > 0),
                    key=lambda x: (-x[2], x[0], x[1]))
    return [(cat, ent, round(score, 4)) for cat, ent, score in ranked]


def _new(category: str, root: str, group: list[Finding], scores: dict[tuple[str, str], float],
         opening: Callable[[Finding], bool] | None = None, nodes: Iterable[str] = ()) -> Incident:
    opened = [f for f in group if opening is None or opening(f)] or group
    incident = Incident(
        category=category, root=root, start_us=min(f.onset_us for f in group),
        detect_us=min(f.detect_us for f in opened), end_us=max(f.end_us for f in group),
        candidates=_ranked(scores), nodes=set(nodes),
    )
    for f in group:
        incident.add(f)
    incident.affected.add(root)
    incident.affected.update(c.node_entity(n) for n in incident.nodes)
    if incident.candidates:
        incident.category, incident.root = incident.candidates[0][0], incident.candidates[0][1]
    return incident


def _clusters(findings: list[Finding], gap_us: int) -> list[list[Finding]]:
    """Split time-sorted findings where the next starts more than ``gap_us`` after the last ends."""
    out: list[list[Finding]] = []
    end = -math.inf
    for f in sorted(findings, key=lambda f: (f.onset_us, f.detect_us, f.kind)):
        if out and f.onset_us <= end + gap_us:
            out[-1].append(f)
            end = max(end, f.end_us)
        else:
            out.append([f])
            end = f.end_us
    return out


def _runs_of_job(clusters: list[list[Finding]]) -> list[list[Finding]]:
    """A failure ends a job's run: what comes after it (once restarted) is another incident."""
    out: list[list[Finding]] = []
    for cluster in clusters:
        current: list[Finding] = []
        for f in cluster:
            current.append(f)
            if f.kind == "job_failed":
                out.append(current)
                current = []
        if current:
            out.append(current)
    return out


class _Diagnosis:
    def __init__(self, ctx: AnalysisContext, findings: list[Finding]) -> None:
        self.ctx = ctx
        self.topo = ctx.projections.topology
        self.interval = ctx.interval_us
        self.free: list[Finding] = list(findings)
        self.incidents: list[Incident] = []
        self.deferred: list[Finding] = []  # taken out of the way until the job incidents exist

    def take(self, keep: Callable[[Finding], bool]) -> list[Finding]:
        taken = [f for f in self.free if keep(f)]
        ids = {id(f) for f in taken}
        self.free = [f for f in self.free if id(f) not in ids]
        return taken

    def release(self, findings: Iterable[Finding]) -> None:
        self.free.extend(findings)

    # ---- 1. rack ------------------------------------------------------------------------------

    def racks(self) -> None:
        stops = self.take(lambda f: f.kind == "node_silent" or (
            f.kind == "node_down" and "power" in str(f.attrs.get("reason", "")).lower()))
        by_rack: dict[str, list[Finding]] = defaultdict(list)
        for f in stops:
            by_rack[self.topo.rack_of(f.node or "") or "?"].append(f)
        leftover: list[Finding] = []
        for rack, group in sorted(by_rack.items()):
            members = self.topo.rack_nodes(rack)
            need = max(2, math.ceil(0.75 * len(members)))
            for cluster in _clusters(group, 2 * self.interval):
                silent = {f.node for f in cluster if f.kind == "node_silent"}
                down = {f.node for f in cluster}
                onsets = sorted(f.onset_us for f in cluster if f.kind == "node_silent")
                together = bool(onsets) and onsets[-1] - onsets[0] <= 2 * self.interval
                if rack != "?" and len(down) >= need and (together or not silent):
                    scores = {("rack_power", c.rack_entity(rack)): 0.8}
                    for node in sorted(str(n) for n in down):
                        scores[("host_hw", c.node_entity(str(node)))] = 0.2 / len(down)
                    self.incidents.append(_new(
                        "rack_power", c.rack_entity(rack), cluster, scores, nodes=members,
                        opening=lambda f: f.kind == "node_silent",
                    ))
                else:
                    leftover.extend(cluster)
        self.release(leftover)

    def cooling(self) -> None:
        warm = self.take(lambda f: f.kind in ("thermal_throttle", "gpu_hot"))
        by_rack: dict[str, list[Finding]] = defaultdict(list)
        for f in warm:
            by_rack[self.topo.rack_of(f.node or "") or "?"].append(f)
        leftover: list[Finding] = []
        for rack, group in sorted(by_rack.items()):
            members = self.topo.rack_nodes(rack)
            for cluster in _clusters(group, 30 * MIN):
                nodes = {f.node for f in cluster}
                if rack != "?" and len(nodes) >= max(2, math.ceil(0.5 * len(members))):
                    scores = {("cooling", c.rack_entity(rack)): 0.85}
                    hottest = sorted({f.entity for f in cluster})[:2]
                    for entity in hottest:
                        scores[("gpu_thermal", entity)] = 0.15 / len(hottest)
                    self.incidents.append(_new("cooling", c.rack_entity(rack), cluster, scores,
                                               nodes=members))
                else:
                    leftover.extend(cluster)
        self.release(leftover)

    # ---- 2. leaf switch -----------------------------------------------------------------------

    def switches(self) -> None:
        downs = self.take(lambda f: f.kind == "link_down")
        by_switch: dict[str, list[Finding]] = defaultdict(list)
        for f in downs:
            by_switch[str(f.attrs.get("switch", ""))].append(f)
        node_ports = self.topo.leaf_node_ports()
        leftover: list[Finding] = []
        # leaves first: a dead leaf's uplinks go down with it, and their far ends (spine ports)
        # are its evidence, not a spine of their own
        for switch, group in sorted(by_switch.items(), key=lambda kv: (kv[0] not in node_ports,
                                                                       kv[0])):
            group = self._far_ends(group)
            ports = node_ports.get(switch, {})
            need = max(3, math.ceil(0.5 * len(ports))) if ports else 3
            group = sorted(group, key=lambda f: (f.onset_us, f.entity))
            while group:
                # The largest set of this switch's ports that went down within a dying
                # switch's spread (SWITCH_DOWN_SPREAD).
                best: list[Finding] = []
                spread = max(SWITCH_DOWN_SPREAD, 2 * self.interval)
                for k, f in enumerate(group):
                    window = [g for g in group[k:] if g.onset_us - f.onset_us <= spread]
                    if len({g.entity for g in window}) > len({g.entity for g in best}):
                        best = window
                if len({f.entity for f in best}) < need:
                    leftover.extend(group)
                    break
                scores = {("network", c.switch_entity(switch)): 0.85,
                          ("network", best[0].entity): 0.1,
                          ("nic", str(best[0].attrs.get("peer") or best[0].entity)): 0.05}
                incident = _new("network", c.switch_entity(switch), best, scores,
                                nodes=set(ports.values()))
                warning = self._switch_warning(switch, best[0].onset_us)
                for f in warning:
                    incident.add(f)
                if warning:
                    # it began warning when its SWITCH_WARNING_PORTS-th port began erroring: an
                    # earlier increment on one port (a benign blip in the long window) is not it
                    first: dict[str, int] = {}
                    for f in warning:
                        first[f.entity] = min(f.onset_us, first.get(f.entity, f.onset_us))
                    began = sorted(first.values())[SWITCH_WARNING_PORTS - 1]
                    incident.start_us = min(incident.start_us, began)
                self.incidents.append(incident)
                taken = {id(f) for f in best}
                group = [f for f in group if id(f) not in taken]
        self.release(self._far_ends(leftover))

    def _far_ends(self, downs: list[Finding]) -> list[Finding]:
        """The far ends of a dead switch's uplinks (spine ports facing it) go down with it,
        within its spread: its evidence. Returns the other ``downs``."""
        died = {id(i): min(g.onset_us for g in i.findings if g.kind == "link_down")
                for i in self.incidents if i.root.startswith("switch:")}
        dead = [i for i in self.incidents if id(i) in died]
        spread = max(SWITCH_DOWN_SPREAD, 2 * self.interval)
        rest = []
        for f in downs:
            owner = next((i for i in dead if f.attrs.get("peer") == i.root
                          and -2 * self.interval <= f.onset_us - died[id(i)] <= spread), None)
            if owner is None:
                rest.append(f)
            else:
                owner.add(f)
        return rest

    def _switch_warning(self, switch: str, died_us: int) -> list[Finding]:
        """Error counters rising on several of a dead switch's ports in the hour before it
        died: its own warning (one part failing), not as many bad cables; taken as its
        evidence. Errors on one or two of its ports stay theirs (a cable may fail anyway)."""
        def before(f: Finding) -> bool:
            return (f.kind in ("port_errors", "rcv_errors")
                    and str(f.attrs.get("switch") or "") == switch
                    and died_us - SWITCH_WARNING <= f.onset_us <= died_us)

        ports = {f.entity for f in self.free if before(f)}
        if len(ports) < SWITCH_WARNING_PORTS:
            return []
        return self.take(before)

    # ---- 3. storage ---------------------------------------------------------------------------

    def storage(self) -> None:
        slow = self.take(lambda f: f.kind == "checkpoint_slow")
        jobs = self.ctx.projections.jobs.jobs
        by_vc: dict[str, list[Finding]] = defaultdict(list)
        for f in slow:
            job = f.entity.removeprefix("job:")
            by_vc[jobs[job].vcluster if job in jobs else ""].append(f)
        for vc, group in sorted(by_vc.items()):
            root = c.storage_entity(f"ckpt-{vc}" if vc else "ckpt")
            for cluster in _clusters(group, 120 * MIN):
                n_jobs = len({f.entity for f in cluster})
                scores = {("storage", root): 0.7 + 0.1 * min(n_jobs, 3)}
                for entity in sorted({f.entity for f in cluster})[:2]:
                    scores[("software", entity)] = 0.1
                self.incidents.append(_new("storage", root, cluster, scores))

    # ---- 4. node ------------------------------------------------------------------------------

    def nodes(self) -> None:
        stops = self.take(lambda f: f.kind in NODE_KINDS)
        by_node: dict[str, list[Finding]] = defaultdict(list)
        for f in stops:
            by_node[f.node or ""].append(f)
        for node, group in sorted(by_node.items()):
            for cluster in _clusters(group, 30 * MIN):
                reasons = " ".join(str(f.attrs.get("reason", "")) for f in cluster).lower()
                planned = any(f.kind == "maintenance" for f in cluster) or any(
                    w in reasons for w in MAINTENANCE_WORDS)
                entity = c.node_entity(node)
                rack = self.topo.rack_of(node)
                scores = ({("host_maintenance", entity): 0.85, ("host_hw", entity): 0.15}
                          if planned else
                          {("host_hw", entity): 0.8, ("host_maintenance", entity): 0.15})
                if rack:
                    scores[("rack_power", c.rack_entity(rack))] = 0.05
                self.incidents.append(_new("host_hw", entity, cluster, scores, nodes={node}))

    def telemetry_gaps(self) -> None:
        """A node's samples stopped while it showed life: the collector, not the node."""
        gaps = self.take(lambda f: f.kind == "telemetry_gap")
        by_node: dict[str, list[Finding]] = defaultdict(list)
        for f in gaps:
            by_node[f.node or ""].append(f)
        for node, group in sorted(by_node.items()):
            entity = c.node_entity(node)
            for cluster in _clusters(group, 30 * MIN):
                scores = {("telemetry_gap", entity): 0.85, ("host_hw", entity): 0.15}
                self.incidents.append(_new("telemetry_gap", entity, cluster, scores))

    def slow_nodes(self) -> None:
        """A node held back as a whole (its busy clock or power below its job's other nodes,
        most of its GPUs reporting HW slowdown / power brake together, or its NIC ports
        carrying less than the same rails of its job's other nodes): ``host_hw`` on the node,
        not one incident per GPU or port. Its GPUs' own slow findings during it are its
        evidence, and its ports' (``port_slow``) when its NICs are what is slow: the slowest
        NIC is the second candidate."""
        self.set_aside_hung()
        self.node_ports_of_incidents()
        slow = self.take(lambda f: f.kind in NODE_SLOW_KINDS)
        by_node: dict[str, list[Finding]] = defaultdict(list)
        for f in slow:
            by_node[f.node or ""].append(f)
        for node, group in sorted(by_node.items()):
            entity = c.node_entity(node)
            for cluster in _clusters(group, HOLD_DOWN):
                start = min(f.onset_us for f in cluster) - 2 * MIN
                end = max(f.end_us for f in cluster)
                cluster += self.take(_slow_gpu_of(node, start, end))
                scores = {("host_hw", entity): 0.8, ("host_maintenance", entity): 0.05}
                nics = [f for f in cluster if f.kind == NODE_PORTS_KIND]
                if nics:
                    cluster += self.take(_slow_port_of(node, start, end))
                    scores[("nic", str(nics[0].attrs.get("nic") or entity))] = 0.15
                rack = self.topo.rack_of(node)
                if rack and not nics:
                    scores[("rack_power", c.rack_entity(rack))] = 0.15
                self.incidents.append(_new("host_hw", entity, cluster, scores, nodes={node}))

    def node_ports_of_incidents(self) -> None:
        """A node that went down, dark or into maintenance while its job still ran carries no
        traffic on any rail: its ports slow against their rails are that incident's evidence
        (the node's own or its rack's), not a second incident."""
        def owner(f: Finding) -> Incident | None:
            rack = self.topo.rack_of(f.node or "")
            roots = {c.node_entity(f.node or "")} | ({c.rack_entity(rack)} if rack else set())
            return next((i for i in self.incidents if i.root in roots
                         and i.start_us - 2 * MIN <= f.end_us
                         and f.onset_us <= i.end_us + 30 * MIN), None)

        for f in self.take(lambda f: f.kind == NODE_PORTS_KIND and owner(f) is not None):
            incident = owner(f)
            assert incident is not None
            incident.add(f)

    def set_aside_hung(self) -> None:
        """Ranks spinning in a hung collective sit at full utilization with their power down:
        a GPU or node found slow while a job holding it made no step progress is the hang's
        doing, not the part's. Those findings wait for the job's incident (``jobs``), which
        takes them as evidence (``absorb``)."""
        stalls = [f for f in self.free if f.kind == "job_stalled"]
        if not stalls:
            return

        def hung(f: Finding) -> bool:
            return (f.kind in NODE_SLOW_KINDS | GPU_SLOW_KINDS) and any(
                f.node in (s.attrs.get("nodes") or ()) and s.onset_us - 2 * MIN <= f.onset_us
                <= s.end_us for s in stalls)

        self.deferred.extend(self.take(hung))

    # ---- 5. GPU -------------------------------------------------------------------------------

    def gpus(self) -> None:
        signals = self.take(lambda f: f.kind in GPU_KINDS)
        by_gpu: dict[str, list[Finding]] = defaultdict(list)
        for f in signals:
            by_gpu[f.entity].append(f)
        for entity, group in sorted(by_gpu.items()):
            for cluster in _clusters(group, HOLD_DOWN):
                scores = _gpu_scores(cluster)
                if not scores:
                    self.release(cluster)
                    continue
                node = cluster[0].node or ""
                ranked = {(cat, entity): v for cat, v in scores.items()}
                ranked[("host_hw", c.node_entity(node))] = 0.3
                self.incidents.append(_new("gpu_hw", entity, cluster, ranked, nodes={node}))

    # ---- 6. link ------------------------------------------------------------------------------

    def links(self) -> None:
        signals = self.take(lambda f: f.kind in PORT_KINDS)
        by_link: dict[str, list[Finding]] = defaultdict(list)
        for f in signals:
            by_link[f.entity].append(f)
        for link, group in sorted(by_link.items()):
            for cluster in _clusters(group, HOLD_DOWN):
                peer = str(cluster[0].attrs.get("peer") or "")
                switch = str(cluster[0].attrs.get("switch") or "")
                node = str(cluster[0].attrs.get("node") or "")
                kinds = [f.kind for f in cluster]
                downs = [f for f in cluster if f.kind == "link_down"]
                stays_down = any(f.attrs.get("ongoing") for f in downs) or any(
                    f.end_us - f.onset_us >= 10 * MIN for f in downs)
                cable = (2.0 * ("port_errors" in kinds) + (2.0 if len(downs) >= 2 else 0.0)
                         + 1.5 * ("port_slow" in kinds))
                nic = 2.0 * ("rcv_errors" in kinds) + (1.5 if stays_down and len(downs) == 1
                                                       else 0.0)
                if not cable and not nic:
                    cable = 1.0
                scores = {("network", link): cable + 0.1}
                if peer.startswith("nic:"):
                    scores[("nic", peer)] = nic
                if switch:
                    scores[("network", c.switch_entity(switch))] = 0.2
                self.incidents.append(_new("network", link, cluster, scores,
                                           nodes={node} if node else ()))

    # ---- 6b. parts that depart from their peers (learned detector) ----------------------------

    def outliers(self) -> None:
        """A part slower than its peers while an incident on its node (or its switch) is open
        is that incident's evidence: the GPUs of a rack that overheats, the ports of a failing
        leaf, the node whose GPU fell off the bus. What is left is a gray failure of its own:
        the GPU (``gpu_hw``), the node (``host_hw``: every GPU of it slow, as under a power cap)
        or the link (``network``, the NIC second)."""
        found = self.take(lambda f: f.kind in OUTLIER_KINDS)
        leftover: list[Finding] = []
        for f in found:
            owner = next((i for i in self.incidents if _covers(i, f)), None)
            if owner is None:
                leftover.append(f)
            else:
                owner.add(f)
        by_entity: dict[str, list[Finding]] = defaultdict(list)
        for f in leftover:
            by_entity[f.entity].append(f)
        for entity, group in sorted(by_entity.items()):
            for cluster in _clusters(group, HOLD_DOWN):
                first = cluster[0]
                node = first.node or ""
                scores: dict[tuple[str, str], float]
                if first.kind == "gpu_outlier":
                    category = "gpu_hw"
                    scores = {(category, entity): 0.7, ("host_hw", c.node_entity(node)): 0.3}
                elif first.kind == "node_outlier":
                    category = "host_hw"
                    scores = {(category, entity): 0.9}
                    rack = self.topo.rack_of(node)
                    if rack:
                        scores[("cooling", c.rack_entity(rack))] = 0.1
                else:
                    category = "network"
                    scores = {(category, entity): 0.7}
                    peer = str(first.attrs.get("peer") or "")
                    if peer.startswith("nic:"):
                        scores[("nic", peer)] = 0.2
                    switch = str(first.attrs.get("switch") or "")
                    if switch:
                        scores[("network", c.switch_entity(switch))] = 0.1
                self.incidents.append(_new(category, entity, cluster, scores,
                                           nodes={node} if node else ()))

    # ---- 6c. the GPU a slowed job points at ---------------------------------------------------

    def job_parts(self) -> None:
        """``gpu_slows_job``: a job that just got slower and a weak signal on one GPU of its
        nodes (detectors.job_parts). When that GPU's own rules found it too, this is the same
        incident, found when the job slowed (its detection moves up). Another incident on the
        job's nodes during the slowdown explains it better (a link, a node held back, a part
        found by its own rule): it joins that one as evidence. Otherwise it opens the GPU's
        incident (``gpu_hw``; advice to investigate: no hardware evidence is cited)."""
        for f in self.take(lambda f: f.kind == JOB_PART_KIND):
            same = next((i for i in self.incidents if i.root == f.entity
                         and i.start_us - HOLD_DOWN <= f.end_us
                         and f.onset_us <= i.end_us + HOLD_DOWN), None)
            if same is not None:
                same.add(f)
                same.start_us = min(same.start_us, f.onset_us)
                same.detect_us = min(same.detect_us, f.detect_us)
                continue
            nodes = set(f.attrs.get("nodes") or ())
            other = next((i for i in self.incidents if i.nodes & nodes
                          and i.start_us - 2 * MIN <= f.end_us
                          and f.onset_us <= i.end_us + 30 * MIN), None)
            if other is not None:
                other.add(f)
                continue
            node = f.node or ""
            scores = {("gpu_hw", f.entity): 1.0, ("host_hw", c.node_entity(node)): 0.3}
            self.incidents.append(_new("gpu_hw", f.entity, [f], scores, nodes={node}))

    # ---- 7. job -------------------------------------------------------------------------------

    def attribute_jobs(self) -> None:
        """Job findings a hardware incident on the job's nodes explains become its evidence.

        A failure, hang or loss anomaly is explained by an incident that crashes jobs (not a
        slowdown: thermal, cooling, storage) when it comes from one scrape before to 20 minutes
        after one of the incident's hard symptoms (an XID, a DBE, a GPU or node gone, a link
        down, maintenance) — precursors do not crash jobs, so a job that dies during a
        precursor died of something else. A failure whose own reason names hardware (CUDA
        error, ECC, network error, node failure...) may also come during the precursors. A
        straggler is explained by any incident on its nodes while it lasts.
        """
        job_findings = self.take(lambda f: f.kind in JOB_KINDS or f.kind == "straggler")
        leftover: list[Finding] = []
        for f in job_findings:
            nodes = set(f.attrs.get("nodes") or ())
            owner = None
            for incident in self.incidents:
                if incident.category in ("software", "sdc", "nccl_hang"):
                    continue
                if f.kind != "straggler" and incident.category in SLOWDOWNS:
                    continue
                if not (incident.nodes & nodes):
                    continue
                if not self._explains(incident, f):
                    continue
                if owner is None or incident.start_us > owner.start_us:
                    owner = incident
            if owner is None:
                leftover.append(f)
            else:
                owner.add(f)
        self.release(leftover)

    def _explains(self, incident: Incident, f: Finding) -> bool:
        if f.kind == "straggler":
            # Any overlap: a part found slow while the job was slow explains it, whichever
            # was seen first (a slow part's peer evidence may take longer than the steps).
            return incident.start_us - 2 * MIN <= f.end_us and f.onset_us <= incident.end_us
        hard = [g.onset_us for g in incident.findings if g.kind in HARD_KINDS]
        before = self.interval + 5 * US
        if any(h - before <= f.onset_us <= h + 20 * MIN for h in hard):
            return True
        reason = str(f.attrs.get("reason", ""))
        return bool(_HARDWARE_REASON.search(reason)) and (
            incident.start_us - before <= f.onset_us <= max(hard, default=incident.start_us)
            + 20 * MIN)

    def jobs(self) -> None:
        # A job that ended on its own account (the scheduler says so: TIMEOUT, OUT_OF_MEMORY,
        # a FAILED run with no step telemetry...) is a job outcome: it opens no incident.
        signals = self.take(lambda f: f.kind in JOB_KINDS and not f.attrs.get("outcome_only"))
        # A slowed job that no hardware incident on its nodes explains is still a finding, not
        # silence: a job-level incident that says so (the job's own code or input pipeline, or
        # a part no detector sees). Its advice stays on the job (remediation: fix_code), so it
        # never takes capacity away.
        signals += [replace(f, text=f"{f.text}; no hardware on its nodes explains it",
                            attrs={**f.attrs, "unexplained": True})
                    for f in self.take(lambda f: f.kind == "straggler")]
        by_job: dict[str, list[Finding]] = defaultdict(list)
        for f in signals:
            by_job[f.entity].append(f)
        for job, group in sorted(by_job.items()):
            for cluster in _runs_of_job(_clusters(group, 15 * MIN)):
                scores = _job_scores(cluster)
                nodes: set[str] = set()
                for f in cluster:
                    nodes.update(f.attrs.get("nodes") or ())
                ranked = {(cat, job): v for cat, v in scores.items()}
                self.incidents.append(_new("software", job, cluster, ranked, nodes=nodes))

    # ---- absorb what is left ------------------------------------------------------------------

    def absorb(self) -> None:
        """Leftover findings on an incident's nodes during it become its evidence."""
        leftover = []
        for f in self.free:
            node = f.node
            owner = None
            for incident in self.incidents:
                if _other_switch(f, incident):
                    continue
                if node and node in incident.nodes and (
                    incident.start_us - 2 * MIN <= f.onset_us <= incident.end_us + 30 * MIN
                ):
                    owner = incident
                    break
            if owner is None:
                leftover.append(f)
            else:
                owner.add(f)
        self.free = leftover

    def run(self) -> list[Incident]:
        self.racks()
        self.switches()
        self.cooling()
        self.storage()
        self.absorb_kinds({"node_down", "node_up", "gpu_absent", "link_down", "maintenance",
                           "maintenance_ended", "thermal_throttle", "gpu_hot", "xid"})
        self.telemetry_gaps()
        self.nodes()
        self.absorb_kinds({"node_up", "maintenance_ended", "gpu_absent", "link_down",
                           "port_errors", "rcv_errors"})
        self.slow_nodes()
        self.gpus()
        # A link that carries less because the GPU or node behind it failed is that incident's.
        self.absorb_kinds({"port_slow"})
        self.links()
        self.outliers()
        self.job_parts()
        self.attribute_jobs()
        self.jobs()
        self.release(self.deferred)
        self.absorb()
        return sorted(self.incidents, key=lambda i: (i.start_us, i.root, i.category))

    def absorb_kinds(self, kinds: set[str]) -> None:
        keep = [f for f in self.free if f.kind not in kinds]
        candidates = [f for f in self.free if f.kind in kinds]
        self.free = keep
        self.absorb_list(candidates)

    def absorb_list(self, findings: list[Finding]) -> None:
        saved, self.free = self.free, findings
        self.absorb()
        self.free = saved + self.free


def _covers(incident: Incident, f: Finding) -> bool:
    """Whether ``incident`` (its nodes or its entities, while open) takes in outlier ``f``."""
    if not (incident.start_us - 2 * MIN <= f.end_us and f.onset_us <= incident.end_us + 30 * MIN):
        return False
    if f.entity in incident.affected or (f.node and f.node in incident.nodes):
        return True
    switch = f.attrs.get("switch")
    return bool(switch) and c.switch_entity(str(switch)) == incident.root


def _slow_gpu_of(node: str, start_us: int, end_us: int) -> Callable[[Finding], bool]:
    """A GPU fail-slow finding on ``node`` that starts within ``[start_us, end_us]``."""
    return lambda f: (f.kind in GPU_SLOW_KINDS and f.node == node
                      and start_us <= f.onset_us <= end_us)


def _slow_port_of(node: str, start_us: int, end_us: int) -> Callable[[Finding], bool]:
    """A ``port_slow`` finding on a port facing ``node`` that starts within
    ``[start_us, end_us]``."""
    return lambda f: (f.kind == "port_slow" and f.node == node
                      and start_us <= f.onset_us <= end_us)


def _other_switch(f: Finding, incident: Incident) -> bool:
    """A port's finding that is not a dead switch's: on another switch (the node is behind both,
    rail i to leaf i), or on the same one after it came back. A cable failing during or just
    after the outage (faults held back by it often start as it is repaired) is its own fault."""
    if f.kind not in PORT_KINDS or not incident.root.startswith("switch:"):
        return False
    return (c.switch_entity(str(f.attrs.get("switch", ""))) != incident.root
            or f.onset_us > incident.end_us)


# ---- scoring --------------------------------------------------------------------------------

_GPU_WEIGHTS: Final[dict[str, dict[str, float]]] = {
    "sbe_rising": {"gpu_hbm": 2.0},
    "row_remap_pending": {"gpu_hbm": 1.5},
    "row_remap_failure": {"gpu_hbm": 2.0},
    "dbe": {"gpu_hbm": 3.0},
    "sram_rising": {"gpu_sram": 3.0},
    "nvlink_rising": {"gpu_hw": 2.0},
    "gpu_absent": {"gpu_hw": 2.0},
    "gpu_hot": {"gpu_thermal": 2.0},
    "thermal_throttle": {"gpu_thermal": 1.5},
    # Fail-slow: the GPU itself (clock, power, PCIe link, HW slowdown) with nothing more
    # specific; weaker than the signals that name a cause, so heat or HBM evidence wins.
    "gpu_slow": {"gpu_hw": 1.0},
    "gpu_power_low": {"gpu_hw": 1.0},
    "pcie_replays": {"gpu_hw": 1.0},
    "hw_slowdown": {"gpu_hw": 1.0},
}


def _gpu_scores(cluster: list[Finding]) -> dict[str, float]:
    scores: dict[str, float] = defaultdict(float)
    for f in cluster:
        if f.kind == "xid":
            hints = tuple(f.attrs.get("hints") or ("gpu_hw",))
            scores[hints[0]] += 3.0
            for hint in hints[1:]:
                scores[hint] += 1.5
        else:
            for category, weight in _GPU_WEIGHTS.get(f.kind, {}).items():
                scores[category] += weight
    return dict(scores)


# Words in the job's own exit reason (as sacct or the launcher reports it) that hint a category.
_REASON_HINTS: Final = (
    (re.compile(r"\bwatchdog\b|\bnccl timeout\b|\bcollective\b", re.I), "nccl_hang"),
    (re.compile(r"\bnan\b|\bloss\b|\bsdc\b", re.I), "sdc"),
)


# A failure reason that names an error of the job's own code (an exception class, out of memory,
# a segfault) is the job's own account of what killed it: it outweighs any one indirect signal
# (a loss anomaly or a stall, 3.0 each), which a bug can also cause (a bad batch blowing up the
# loss, a rank stuck before it raises).
_NAMED_ERROR: Final = re.compile(
    r"\b[A-Z]\w*(?:Error|Exception)\b|(?i:\bOOM\b|out of memory|segmentation fault|traceback)")
NAMED_ERROR_WEIGHT: Final = 3.5


def _job_scores(cluster: list[Finding]) -> dict[str, float]:
    scores: dict[str, float] = {"software": 0.0, "nccl_hang": 0.0, "sdc": 0.0}
    for f in cluster:
        if f.kind == "loss_anomaly":
            scores["sdc"] += 3.0
        elif f.kind == "job_stalled":
            scores["nccl_hang"] += 3.0
        elif f.kind == "straggler":
            scores["software"] += 1.0
        elif f.kind == "job_failed":
            reason = str(f.attrs.get("reason", "")).lower()
            hinted = False
            for pattern, category in _REASON_HINTS:
                if pattern.search(reason):
                    scores[category] += 1.0
                    hinted = True
            if f.attrs.get("exit_code") == -6:
                scores["nccl_hang"] += 1.0
                hinted = True
            if not hinted:
                named = _NAMED_ERROR.search(str(f.attrs.get("reason", "")))
                scores["software"] += NAMED_ERROR_WEIGHT if named else 2.0
            else:
                scores["software"] += 0.3
    for category in scores:
        scores[category] += 0.05  # every job category stays a candidate
    return scores


def diagnose(ctx: AnalysisContext, findings: list[Finding]) -> list[Incident]:
    """Group ``findings`` into incidents and rank their root causes (deterministic)."""
    return _Diagnosis(ctx, findings).run()
