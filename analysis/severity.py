"""How bad an incident is, and whether it is still going on: the one rule the report, the alerts
and the metrics share (docs/analysis.md#severity has the table).

Severity follows impact, read from the stored incident (the ``incidents`` view) and the job
events, never from the truth:
- the jobs it failed: ``job.failed`` events in its evidence (fatal);
- the jobs it touched: jobs holding one of its nodes (the root's nodes, ``root_nodes``) at any
  time between its first and last symptom, failed or only slowed;
- the GPUs it affected: the GPUs of those jobs, or the component's own when more (a rack's
  every GPU, one GPU of a GPU fault).

Because it is read from the stored incident (stored once, when first emitted), an incident keeps
the severity it was given as it goes on: an alert's labels stay stable, so Alertmanager never
sees two alerts for one incident.

State: an incident is ``open`` while its last symptom (``end_us``) is less than
``RESOLVE_AFTER_S`` before the newest event time known (the store's, or the live stream's), and
``resolved`` after that quiet time. A GPU that stays off the bus keeps its incident open: its
absence is a symptom at every scrape.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import duckdb

from fleetlog.analysis.events import INVENTORY_TYPES, fold_store
from fleetlog.analysis.projections import Topology
from fleetlog.analysis.stored_incidents import root_nodes

SEVERITIES: Final = ("critical", "warning", "info")  # most severe first
RESOLVE_AFTER_S: Final = 900.0  # quiet time after the last symptom before an incident resolves

# critical: a failure this wide (GPUs of the failed or touched jobs, or of the component)
CRITICAL_GPUS: Final = 256
# critical: a failure of this many jobs at once
CRITICAL_JOBS: Final = 2
# a component spanning this many nodes (a rack, a leaf switch) is at least a warning
WIDE_NODES: Final = 4
# planned work: never paged as critical
PLANNED: Final = frozenset({"host_maintenance"})
# silent corruption: wrong results without a crash, at least a warning even when nothing failed
SILENT: Final = frozenset({"sdc"})


@dataclass(frozen=True)
class Impact:
    gpus: int = 0  # GPUs affected (the touched jobs' or the component's, the larger)
    jobs: int = 0  # jobs touched (failed or slowed)
    jobs_failed: int = 0  # jobs whose job.failed is in the evidence
    nodes: int = 0  # nodes of the component

    @property
    def fatal(self) -> bool:
        return self.jobs_failed > 0


def severity(category: str, impact: Impact) -> str:
    """The severity of an incident of ``category`` with ``impact`` (the documented table)."""
    wide = impact.gpus >= CRITICAL_GPUS or impact.nodes >= WIDE_NODES
    if category not in PLANNED and impact.fatal and (
            wide or impact.jobs_failed >= CRITICAL_JOBS):
        return "critical"
    if impact.fatal or impact.jobs > 0 or wide or category in SILENT:
        return "warning"
    return "info"


def state(end_us: int | None, start_us: int, as_of_us: int) -> str:
    """``open`` or ``resolved`` at ``as_of_us`` (event time): see the module's docstring."""
    last = end_us if end_us is not None else start_us
    return "open" if as_of_us - last < RESOLVE_AFTER_S * 1_000_000 else "resolved"


def rank(severity_name: str) -> int:
    """0 for the most severe: sort keys."""
    return SEVERITIES.index(severity_name) if severity_name in SEVERITIES else len(SEVERITIES)


_JOB_HOLDS = """
    WITH moves AS (
        SELECT job, ts, type, payload->'nodes' AS nodes,
               lead(ts) OVER (PARTITION BY job ORDER BY ts, event_id) AS until
        FROM job_events WHERE type IN ('job.placed', 'job.restarted', 'job.migrated',
            'job.failed', 'job.completed', 'job.cancelled')),
    holds AS (
        SELECT job, ts, until, unnest(from_json(nodes, '["VARCHAR"]')) AS node FROM moves
        WHERE type IN ('job.placed', 'job.restarted', 'job.migrated') AND nodes IS NOT NULL),
    sizes AS (
        SELECT job, arg_max(TRY_CAST(payload->>'gpus' AS INTEGER), ts) AS gpus
        FROM job_events WHERE type = 'job.submitted' GROUP BY job),
    touched AS (
        SELECT DISTINCT s.incident_id, h.job FROM _scope s JOIN holds h USING (node)
        WHERE h.ts <= s.end_ts AND (h.until IS NULL OR h.until >= s.start_ts)),
    failed AS (
        SELECT DISTINCT i.incident_id, j.job
        FROM (SELECT incident_id, unnest(evidence) AS event_id FROM incidents
              WHERE incident_id IN (SELECT DISTINCT incident_id FROM _scope)) i
        JOIN job_events j ON j.event_id = i.event_id WHERE j.type = 'job.failed'),
    every AS (SELECT incident_id, job, false AS failed FROM touched
              UNION ALL SELECT incident_id, job, true FROM failed)
    SELECT e.incident_id, count(DISTINCT e.job), count(DISTINCT e.job) FILTER (WHERE e.failed),
           coalesce(sum(z.gpus), 0)
    FROM (SELECT incident_id, job, bool_or(failed) AS failed FROM every GROUP BY ALL) e
    LEFT JOIN sizes z USING (job)
    GROUP BY e.incident_id"""


def assess(con: duckdb.DuckDBPyConnection, incident_ids: Iterable[str] | None = None,
           topo: Topology | None = None) -> dict[str, tuple[str, Impact]]:
    """Incident id -> (severity, impact) for the stored incidents (all, or ``incident_ids``)."""
    wanted = None if incident_ids is None else sorted(set(incident_ids))
    sql = ("SELECT incident_id, category, root_entity, start_ts, end_ts FROM incidents"
           + ("" if wanted is None else " WHERE list_contains(?, incident_id)"))
    rows = con.execute(sql, [] if wanted is None else [wanted]).fetchall()
    if not rows:
        return {}
    topo = topo or fold_store(con, INVENTORY_TYPES).topology
    gpu_count = {name: info.gpu_count for name, info in topo.nodes.items()}
    scope: list[tuple[str, str, object, object]] = []
    component: dict[str, tuple[int, int]] = {}  # id -> (nodes, GPUs)
    for incident_id, _category, root, start, end in rows:
        nodes = root_nodes(root, topo)
        gpus = 1 if root.startswith("gpu:") else sum(gpu_count.get(n, 0) for n in nodes)
        component[incident_id] = (len(nodes), gpus)
        scope += [(incident_id, node, start, end if end is not None else start)
                  for node in sorted(nodes)]
    con.execute("CREATE OR REPLACE TEMP TABLE _scope (incident_id VARCHAR, node VARCHAR, "
                "start_ts TIMESTAMPTZ, end_ts TIMESTAMPTZ)")
    try:
        if scope:
            con.executemany("INSERT INTO _scope VALUES (?, ?, ?, ?)", scope)
        # incidents on no node (a job's own fault) still count the jobs their evidence failed
        con.executemany("INSERT INTO _scope VALUES (?, NULL, NULL, NULL)",
                        [(r[0],) for r in rows])
        jobs = {r[0]: (int(r[1]), int(r[2]), int(r[3]))
                for r in con.execute(_JOB_HOLDS).fetchall()}
    finally:
        con.execute("DROP TABLE IF EXISTS _scope")
    out: dict[str, tuple[str, Impact]] = {}
    for incident_id, category, _root, _start, _end in rows:
        n_nodes, own_gpus = component[incident_id]
        n_jobs, n_failed, job_gpus = jobs.get(incident_id, (0, 0, 0))
        impact = Impact(gpus=max(own_gpus, job_gpus), jobs=n_jobs, jobs_failed=n_failed,
                        nodes=n_nodes)
        out[incident_id] = (severity(category, impact), impact)
    return out
