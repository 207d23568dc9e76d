"""Two virtual clusters of six nodes (the sixth of each a spare) with jobs, incidents and host
events placed by hand, as contract events: no generator, no telemetry. What the capacity,
migration and precursor logic reads (inventory, job events, ``incident.opened``)."""

from __future__ import annotations

from pathlib import Path

from fleetlog.ingest import contract as c
from fleetlog.ingest.store.writer import land

T0 = 1_767_571_200_000_000  # 2026-01-05T00:00:00Z
S = 1_000_000
FAIL = T0 + 3600 * S  # the GPU dies an hour in
SRC = "test"


def node_name(n: int) -> str:
    return f"n{n:05d}"


class Fleet:
    def __init__(self) -> None:
        self.events: list[c.Envelope] = []
        for n in range(1, 13):
            vc = "vc0" if n <= 6 else "vc1"
            self.add(c.NodeRegistered(node=node_name(n), rack=f"r{(n - 1) // 3 + 1:04d}",
                                      region="reg0", vcluster=vc, gpu_count=8,
                                      gpu_model="H100", nic_count=8, spare=n in (6, 12)),
                     T0 - S)

    def add(self, payload: c.Payload, t: int, event_id: str | None = None) -> c.Envelope:
        event = c.make_event(payload, time_us=t, source=SRC, id=event_id)
        self.events.append(event)
        return event

    def job(self, name: str, nodes: list[int], vc: str) -> None:
        names = [node_name(n) for n in nodes]
        self.add(c.JobSubmitted(job=name, gpus=8 * len(nodes), vcluster=vc), T0)
        self.add(c.JobPlaced(job=name, nodes=names, vcluster=vc), T0 + 1)
        self.add(c.JobStarted(job=name), T0 + 2)
        self.add(c.JobCheckpointCompleted(job=name, step=100, duration_s=60.0, size_gb=10.0),
                 T0 + 1800 * S)
        self.add(c.JobStepReported(job=name, step=500, step_time_s=5.0, tokens_per_s=1e6),
                 T0 + 12 * 3600 * S)

    def incident(self, name: str, category: str, root: str, start: int, end: int,
                 detect: int, evidence: list[str]) -> None:
        """An ``incident.opened`` as the analysis stores it (its event id is the incident id)."""
        self.add(c.IncidentOpened(incident_id=name, start_us=start, end_us=end,
                                  category=category, root_entity=root, confidence=0.9,
                                  evidence=evidence), detect, name)

    def gpu_failure(self, job: str, node: int, *, restarted_after_s: float | None,
                    nodes_after: list[int]) -> None:
        """XID 79 on one GPU of ``node`` fails ``job``; the incident explains the failure."""
        failed = self.add(c.JobFailed(job=job, step=300, exit_code=-6, reason="Xid 79"), FAIL)
        self.incident(f"inc-{job}", "gpu_hw", c.gpu_entity(node_name(node), 3), FAIL - 2 * S,
                      FAIL - 2 * S, FAIL, [failed.id])
        if restarted_after_s is not None:
            self.add(c.JobRestarted(job=job, from_step=100,
                                    nodes=[node_name(n) for n in nodes_after],
                                    overhead_s=restarted_after_s),
                     FAIL + round(restarted_after_s * S))

    def store(self, tmp_path: Path) -> Path:
        db = tmp_path / "fleet.duckdb"
        land(db, sorted(self.events, key=lambda e: (e.time_us, e.id)))
        return db
