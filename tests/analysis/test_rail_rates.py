"""A port against the ports of the same rail of its job (issue #19, analysis/detectors/rail_rates):
a node whose every NIC port carries less is one ``host_hw`` finding for the node, found on the
simulator's ``node_network`` fail-slow kind; a lone slow port stays one ``port_slow``; a job of
too few nodes compares nothing; the bounded peer sample gives the verdict all peers give."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import numpy as np
import pytest
from fleet_builders import Cluster, analyze_cluster, job, only

from fleetlog.analysis.context import AnalysisContext, Finding, build_context
from fleetlog.analysis.detectors import rail_rates
from fleetlog.analysis.evaluate import evaluate_stores
from fleetlog.analysis.pipeline import analyze_store
from fleetlog.generators.config import SimConfig
from fleetlog.generators.run import simulate
from fleetlog.ingest.store import open_store
from fleetlog.ingest.store.writer import land

SEED = 11  # the figures (bench/failslow.py) use seeds 701-705


def _simulated(tmp_path_factory: pytest.TempPathFactory, kind: str) -> Path:
    db = tmp_path_factory.mktemp(kind) / f"{kind}.duckdb"
    simulate(SimConfig(nodes=32, hours=3.0, seed=SEED, scenario=f"failslow_{kind}"),
             f"duckdb:{db}")
    return db


@pytest.fixture(scope="module")
def node_network(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _simulated(tmp_path_factory, "node_network")


@pytest.fixture(scope="module")
def port_bandwidth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _simulated(tmp_path_factory, "port_bandwidth")


def _context(db: Path) -> Iterator[AnalysisContext]:
    con: duckdb.DuckDBPyConnection = open_store(db, read_only=True)
    try:
        ctx = build_context(con)
        assert ctx is not None
        yield ctx
    finally:
        con.close()


def _truth_roots(db: Path) -> list[str]:
    con = open_store(db, read_only=True)
    try:
        return [str(row[0]) for row in con.execute(
            "SELECT entity FROM truth_faults ORDER BY start_ts").fetchall()]
    finally:
        con.close()


def test_a_node_whose_nic_ports_are_all_slow_is_one_host_hw_incident(node_network: Path) -> None:
    report = evaluate_stores([[str(node_network)]])
    scores = report["by_kind"]["node_network"]
    assert scores["faults"] == 3
    assert scores["recall"] == 1.0, report["missed"]
    assert scores["ac1"] == 1.0, report["wrong_root"]
    assert report["false_alarms"] == 0 and report["duplicates"] == 0, (
        report["false_alarm_examples"])
    con = open_store(node_network, read_only=True)
    try:
        incidents = analyze_store(con).incidents
    finally:
        con.close()
    for root in set(_truth_roots(node_network)):
        node = root.removeprefix("node:")
        (incident,) = [i for i in incidents if i.root == root]
        assert incident.category == "host_hw"
        # the NIC second, one of the node's
        assert incident.candidates[1][0] == "nic"
        assert incident.candidates[1][1].startswith(f"nic:{node}/")
        kinds = {f.kind for f in incident.findings}
        assert "node_ports_slow" in kinds
        found = [f for f in incident.findings if f.kind == "node_ports_slow"]
        # the rates are the evidence: every rail of the node at about half its rail's median
        assert all(f.attrs["rate_ratio"] <= rail_rates.PORT_RATE_RATIO for f in found)
        assert all(len(f.attrs["rails"]) == 8 for f in found)
        # one finding for the node, never a port finding per rail, nor a link incident
        assert not any(f.kind == "port_slow" and f.node == node
                       for i in incidents for f in i.findings)
        assert not [i for i in incidents if i.root.startswith(("link:", f"nic:{node}/"))]


def test_a_lone_slow_port_stays_one_port_slow(port_bandwidth: Path) -> None:
    for ctx in _context(port_bandwidth):
        assert rail_rates.detect_rail_rates(ctx) == []
    report = evaluate_stores([[str(port_bandwidth)]])
    assert report["by_kind"]["port_bandwidth"]["recall"] == 1.0, report["missed"]
    assert report["false_alarms"] == 0 and report["duplicates"] == 0
    con = open_store(port_bandwidth, read_only=True)
    try:
        incidents = analyze_store(con).incidents
    finally:
        con.close()
    for root in set(_truth_roots(port_bandwidth)):
        (incident,) = [i for i in incidents if i.root == root]
        assert incident.category == "network"
        assert "port_slow" in {f.kind for f in incident.findings}
    assert not any(f.kind == "node_ports_slow" for i in incidents for f in i.findings)


def test_the_bounded_peer_sample_gives_the_verdict_of_all_peers(node_network: Path) -> None:
    for ctx in _context(node_network):
        sizes = {p.job: len(p.nodes) for p in ctx.projections.jobs.placements}
        sampled = rail_rates.rail_findings(ctx, rail_rates.MIN_PEERS)
        everyone = rail_rates.rail_findings(ctx, 10_000)
        # a job with more other nodes than the sample: the sample is a real subset there
        assert any(sizes[str(f.attrs["job"])] - 1 > rail_rates.MIN_PEERS for f in sampled)

        def first(findings: list[Finding]) -> dict[tuple[str, str], int]:
            out: dict[tuple[str, str], int] = {}
            for f in findings:
                key = (f.entity, str(f.attrs["job"]))
                out[key] = min(f.detect_us, out.get(key, f.detect_us))
            return out

        assert first(sampled).keys() == first(everyone).keys() != set()
        for key, detect in first(sampled).items():
            assert abs(detect - first(everyone)[key]) <= 2 * ctx.interval_us


def _half_node(job_nodes: list[int], other_nodes: list[int],
               rails: range = range(8)) -> Cluster:
    """Two jobs carrying the same traffic per rail (5 % noise); the ports of n00001 (in the
    first job) on ``rails`` at half their rate after the first 10 minutes."""
    cluster = Cluster(nodes=8, scrapes=240, traffic=True)
    job(cluster, "j1", job_nodes)
    if other_nodes:
        job(cluster, "j2", other_nodes)
    noise = np.random.default_rng(3).normal(0.0, 0.05, (240, 8, 9, 2))

    def rates(s: int, switch: str, port: int, v: dict[str, float]) -> None:
        leaf = int(switch.rsplit("-", 1)[1])
        v["xmit_rate"] = 1e9 * (1.0 + float(noise[s, leaf, port, 0]))
        v["rcv_rate"] = 1e9 * (1.0 + float(noise[s, leaf, port, 1]))
        if port == 1 and leaf in rails and s >= 60:  # n00001 faces port 1 of every leaf
            v["xmit_rate"] *= 0.5
            v["rcv_rate"] *= 0.5

    cluster.port_hooks.append(rates)
    return cluster


@pytest.mark.parametrize(("job_nodes", "found"), [([0, 1, 2, 3], True), ([0, 1, 2], False)])
def test_a_job_of_too_few_nodes_compares_nothing(db_path: Path, job_nodes: list[int],
                                                 found: bool) -> None:
    """Four nodes are enough to name n00001; with three its rails' medians are two peers'
    word, and the other job's nodes, whose rails carry the same rate, are no peers of it."""
    others = [n for n in range(8) if n not in job_nodes]
    land(db_path, _half_node(job_nodes, others).build())
    for ctx in _context(db_path):
        findings = rail_rates.detect_rail_rates(ctx)
        assert [(f.kind, f.entity) for f in findings] == (
            [("node_ports_slow", "node:n00001")] if found else [])


def test_half_the_rails_slow_is_the_nodes_incident_with_its_ports_as_evidence(
        db_path: Path) -> None:
    """Four of eight rails at half: against the node's median each of them is a ``port_slow``
    too; they are the node's evidence, not four link incidents."""
    incident = only(analyze_cluster(_half_node(list(range(8)), [], rails=range(4)), db_path))
    assert (incident.category, incident.root) == ("host_hw", "node:n00001")
    assert incident.candidates[1][:2] in {("nic", f"nic:n00001/{r}") for r in range(4)}
    slow_ports = {f.entity for f in incident.findings if f.kind == "port_slow"}
    assert slow_ports == {f"link:leaf-su01-{r}/1" for r in range(4)}
    assert "node_ports_slow" in {f.kind for f in incident.findings}
