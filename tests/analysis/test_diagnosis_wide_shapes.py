"""Diagnosis of the wide shapes of docs/faults.md#symptom-shapes-template-and-wide on a hand-made
cluster: a software crash after a stall or a loss spike is still software (the job's own error
names it), a hang without the watchdog's line is still a hang, and a leaf switch that warns
with errors on its ports or loses them over minutes is one switch incident, not many cables."""

from __future__ import annotations

from pathlib import Path

import pytest
from fleet_builders import Cluster, analyze_cluster, job, only

from fleetlog.ingest import contract as c


@pytest.mark.parametrize(("exit_code", "reason", "category"), [
    (1, "RuntimeError: expected all tensors to be on the same device", "software"),
    (1, "torch.OutOfMemoryError: CUDA out of memory", "software"),
    (139, "Segmentation fault (core dumped)", "software"),
    # a hang the scheduler or an operator killed, or aborted with no message: still a hang
    (137, "Killed", "nccl_hang"),
    (-6, "Aborted (core dumped)", "nccl_hang"),
    # the real watchdog line names an exception class too: the hint wins
    (-6, "DistBackendError: Watchdog caught collective operation timeout", "nccl_hang"),
])
def test_a_stall_then_a_failure_is_named_by_the_failure(db_path: Path, exit_code: int,
                                                         reason: str, category: str) -> None:
    cluster = Cluster()
    job(cluster, "j7", [4, 5, 6, 7], steps_until=50, fail_at=75, exit_code=exit_code,
        reason=reason)
    incident = only(analyze_cluster(cluster, db_path))
    assert (incident.category, incident.root) == (category, "job:j7")
    assert {"job_stalled", "job_failed"} <= {f.kind for f in incident.findings}


def _spiking_job(cluster: Cluster, spike_from: int, fail_at: int, reason: str) -> None:
    names = [cluster.name(n) for n in (4, 5, 6, 7)]
    t0 = cluster.t(0) - 10_000_000
    cluster.add(c.JobSubmitted(job="j7", gpus=32, vcluster="vc0"), t0)
    cluster.add(c.JobPlaced(job="j7", nodes=names, vcluster="vc0"), t0 + 1)
    cluster.add(c.JobStarted(job="j7", step=0), t0 + 2)
    for s in range(fail_at):
        loss = (2.0 - s * 0.001) * (6.0 if s >= spike_from else 1.0)
        cluster.add(c.JobStepReported(job="j7", step=s + 1, step_time_s=9.5, tokens_per_s=1e6,
                                      loss=loss), cluster.t(s) + 5_000_000)
    cluster.add(c.JobFailed(job="j7", step=fail_at, exit_code=1, reason=reason),
                cluster.t(fail_at) + 6_000_000)


@pytest.mark.parametrize(("reason", "category"), [
    ("ValueError: expected sequence of length 4096 at dim 1 (got 4095)", "software"),
    ("OOM: out of memory while allocating activations", "software"),
    ("sdc check mismatch", "sdc"),  # a check that compares replicas: corruption
])
def test_a_loss_spike_then_a_failure_is_named_by_the_failure(db_path: Path, reason: str,
                                                             category: str) -> None:
    cluster = Cluster()
    _spiking_job(cluster, 50, 70, reason)
    incident = only(analyze_cluster(cluster, db_path))
    assert (incident.category, incident.root) == (category, "job:j7")
    assert "loss_anomaly" in {f.kind for f in incident.findings}


def test_a_leaf_switch_losing_its_ports_over_minutes_is_one_switch(db_path: Path) -> None:
    cluster = Cluster()

    def dying(s: int, sw: str, port: int, v: dict[str, float]) -> None:
        down_at = 80 + 3 * (port - 1)  # one port every 30 s: eight ports over 3.5 min
        if sw == "leaf-su01-2" and s >= down_at:
            v["link_state"] = 1.0
            v["link_downed"] = 1.0

    cluster.port_hooks.append(dying)
    job(cluster, "j1", [0, 1, 2, 3], fail_at=82, reason="NCCL error: network error")
    incident = only(analyze_cluster(cluster, db_path))
    assert (incident.category, incident.root) == ("network", "switch:leaf-su01-2")
    assert incident.start_us == cluster.t(80)
    assert len({f.entity for f in incident.findings if f.kind == "link_down"}) == 8


def test_a_leaf_switch_that_warns_on_several_ports_is_one_switch(db_path: Path) -> None:
    cluster = Cluster()

    def warns(s: int, sw: str, port: int, v: dict[str, float]) -> None:
        if sw != "leaf-su01-5":
            return
        if port == 1 and s >= 12:  # a benign blip half an hour before, on one port
            v["symbol_error"] = 2.0
        if port in (1, 3, 4, 6) and s >= 40:
            v["symbol_error"] += float((s - 40) * 4)
        if s >= 90:
            v["link_state"] = 1.0
            v["link_downed"] = 1.0

    cluster.port_hooks.append(warns)
    incident = only(analyze_cluster(cluster, db_path))
    assert (incident.category, incident.root) == ("network", "switch:leaf-su01-5")
    # the errors were its first symptom; the blip on one port was not
    assert cluster.t(40) <= incident.start_us < cluster.t(50)
    assert {f.entity for f in incident.findings if f.kind == "port_errors"} == {
        f"link:leaf-su01-5/{p}" for p in (1, 3, 4, 6)}


def test_a_cable_failing_on_a_switch_that_later_dies_stays_a_cable(db_path: Path) -> None:
    """Errors on one port before its switch dies are that cable's, not the switch's warning."""
    cluster = Cluster()

    def both(s: int, sw: str, port: int, v: dict[str, float]) -> None:
        if sw != "leaf-su01-5":
            return
        if port == 3 and s >= 20:
            v["symbol_error"] = float((s - 20) * 5)
            v["link_error_recovery"] = float((s - 20) // 4)
            if s in (40, 41, 50, 51):
                v["link_state"] = 1.0
            v["link_downed"] = float((s >= 40) + (s >= 50))
        if s >= 100:
            v["link_state"] = 1.0
            v["link_downed"] = 3.0

    cluster.port_hooks.append(both)
    incidents = analyze_cluster(cluster, db_path)
    assert {(i.category, i.root) for i in incidents} == {
        ("network", "link:leaf-su01-5/3"), ("network", "switch:leaf-su01-5")}
