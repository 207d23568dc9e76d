"""What a batch report says, computed from the store for one time window.

Node health and job figures come from the projections folded over the store's events (node
health up to the window's end; the jobs over the window's events alone); the rest is a query
over views any store has (nodes, xid_events, incidents, recommendations, dead_letters). So a
report works on simulated and on imported real data alike, and the same window always gives the
same numbers.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Final

import duckdb

from fleetlog.analysis.events import HOST_TYPES, INVENTORY_TYPES, JOB_TYPES, fold_store
from fleetlog.analysis.job_history import US
from fleetlog.analysis.projections import Jobs, NodeHealth
from fleetlog.analysis.severity import Impact, assess, rank, state
from fleetlog.ingest.contract import to_us
from fleetlog.ingest.contract.errors import FleetlogError
from fleetlog.ingest.contract.time_range import MAX_TIME_US, MIN_TIME_US, RANGE_TEXT


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime

    @property
    def hours(self) -> float:
        return (self.end - self.start).total_seconds() / 3600.0

    @property
    def bucket(self) -> str:
        """Chart/trend bucket: hours for windows up to two days, days beyond."""
        return "hour" if self.hours <= 48 else "day"

    def slug(self) -> str:
        return f"{self.start:%Y%m%dT%H%M%SZ}_{self.end:%Y%m%dT%H%M%SZ}"


class ReportError(FleetlogError):
    """The report cannot be made; the message says what to do."""


def latest_event_time(con: duckdb.DuckDBPyConnection) -> datetime | None:
    row = con.execute("SELECT max(ts) FROM event_log").fetchone()
    return row[0] if row else None


def resolve_window(
    con: duckdb.DuckDBPyConnection, window_s: float, until: datetime | None,
) -> Window:
    end = until or latest_event_time(con)
    if end is None:
        raise ReportError("the store holds no events yet: ingest or simulate some first")
    if not 0 < window_s <= _MAX_WINDOW_S:  # also refuses nan
        raise ReportError(f"a report window of {window_s:g} s is not in (0, {_MAX_WINDOW_S:g}] s "
                          f"(the valid time range {RANGE_TEXT})")
    try:
        return Window(start=end - timedelta(seconds=window_s), end=end)
    except OverflowError as exc:  # an end near year 1 (a library caller's --until)
        raise ReportError(f"the window of {window_s:g} s before {end} starts before year 1: "
                          "give a shorter window or a later end") from exc


_MAX_WINDOW_S: Final = (MAX_TIME_US - MIN_TIME_US) / 1e6  # the span of the valid time range


def _records(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    cursor = con.execute(sql, params)
    columns = [d[0] for d in cursor.description]
    return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def fleet_health(con: duckdb.DuckDBPyConnection, w: Window, health: NodeHealth,
                 jobs: Jobs) -> dict[str, Any]:
    """The fleet, node health at the window's end (``health``), and counts in the window
    (``jobs``: the window's job events folded)."""
    fleet = _records(con, """SELECT count(*) AS nodes, coalesce(sum(gpu_count), 0) AS gpus,
        count(*) FILTER (WHERE spare) AS spares, count(DISTINCT rack) AS racks FROM nodes""", [])[0]
    states = list(health.state.values())
    counts = _records(con, """SELECT
        (SELECT count(*) FROM incidents WHERE start_ts BETWEEN ? AND ?) AS incidents,
        (SELECT count(*) FROM xid_events WHERE ts BETWEEN ? AND ? AND fatal) AS fatal_xids""",
        [w.start, w.end] * 2)[0]
    dead_letters = _records(con, "SELECT count(*) AS dead_letters FROM dead_letters", [])[0]
    return {**fleet, "down": states.count("down"), "in_maintenance": states.count("maintenance"),
            **counts, "job_failures": sum(info.failures for info in jobs.jobs.values()),
            **dead_letters}


def incidents(con: duckdb.DuckDBPyConnection, w: Window) -> list[dict[str, Any]]:
    """The incidents that started in the window or were still going on in it, for triage: open
    ones first (state as of the window's end), then by severity (``analysis.severity``), then
    oldest first; the component action on its own, the job actions summarised with a count."""
    rows = _records(con, """
        SELECT i.incident_id, i.start_ts, i.end_ts, i.category, i.root_entity,
               round(i.confidence, 3) AS confidence,
               coalesce(string_agg(DISTINCT r.action || ' ' || r.target, '; '
                                   ORDER BY r.action || ' ' || r.target)
                        FILTER (WHERE r.target NOT LIKE 'job:%'), '') AS component_action,
               list(r.action) FILTER (WHERE r.target LIKE 'job:%') AS job_actions
        FROM incidents i LEFT JOIN recommendations r USING (incident_id)
        WHERE i.start_ts <= ? AND coalesce(i.end_ts, i.start_ts) >= ?
        GROUP BY ALL""", [w.end, w.start])
    assessed = assess(con, [row["incident_id"] for row in rows])
    as_of_us = to_us(w.end)
    out = []
    for row in rows:
        level, impact = assessed.get(row["incident_id"], ("info", Impact()))
        out.append({
            "incident_id": row["incident_id"],
            "state": state(None if row["end_ts"] is None else to_us(row["end_ts"]),
                           to_us(row["start_ts"]), as_of_us),
            "severity": level,
            "start_ts": row["start_ts"],
            "category": row["category"],
            "root_entity": row["root_entity"],
            "confidence": row["confidence"],
            "gpus": impact.gpus,
            "jobs_failed": impact.jobs_failed,
            "jobs_touched": impact.jobs,
            "component_action": row["component_action"],
            "job_actions": _job_actions(row["job_actions"] or []),
        })
    return sorted(out, key=lambda r: (r["state"] != "open", rank(r["severity"]),
                                      r["start_ts"], r["incident_id"]))


def _job_actions(actions: list[str]) -> str:
    """``17 job actions: restart_from_checkpoint x15, migrate_job x2``."""
    if not actions:
        return ""
    counts = Counter(actions)
    kinds = ", ".join(f"{action} x{n}" for action, n in
                      sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return f"{len(actions)} job action{'s' if len(actions) != 1 else ''}: {kinds}"


def actions_taken(con: duckdb.DuckDBPyConnection, w: Window) -> list[dict[str, Any]]:
    """What ``fleetlog act`` did in the window: its ``action.*`` events (none in a store it
    never wrote to), newest first."""
    return _records(con, """
        SELECT ts, split_part(type, '.', 2) AS outcome, payload->>'action' AS action,
               payload->>'target' AS target, payload->>'incident_id' AS incident_id,
               coalesce(payload->>'why', payload->>'error', payload->>'command', '') AS detail
        FROM event_log
        WHERE type IN ('action.executed', 'action.skipped', 'action.failed')
          AND ts BETWEEN ? AND ?
        ORDER BY ts DESC, event_id""", [w.start, w.end])


def job_outcomes(con: duckdb.DuckDBPyConnection, w: Window) -> list[dict[str, Any]]:
    """How job runs ended, by the scheduler's state: a job that ended on its own account
    (``account`` job: its code, limits, owner or policy) is counted here, not as an incident."""
    return _records(con, """SELECT state, account, count(*) AS runs,
            count(DISTINCT job) AS jobs, count(exit_code) AS with_exit_code
        FROM job_outcomes WHERE state IS NOT NULL AND ts BETWEEN ? AND ?
        GROUP BY ALL ORDER BY runs DESC, state""", [w.start, w.end])


def incidents_by_category(con: duckdb.DuckDBPyConnection, w: Window) -> list[dict[str, Any]]:
    return _records(con, """SELECT category, count(*) AS incidents FROM incidents
        WHERE start_ts BETWEEN ? AND ? GROUP BY category ORDER BY incidents DESC, category""",
        [w.start, w.end])


def _sql_round(x: float, digits: int) -> float:
    """Round as SQL's ``round`` does (these figures were SQL's): the exact value to ``digits``
    decimals, halves away from zero (Python's ``round`` halves to even: 0.125 -> 0.12)."""
    return float(Decimal(x).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))


def jobs_goodput(window: Jobs, sizes: Jobs) -> list[dict[str, Any]]:
    """Per job with events in the window (``window``: those events folded): ETTR = productive
    time ÷ wall time in the window (Meta's definition), where unproductive time is work lost to
    failures, restart overhead and checkpoint writes. A job's size is its latest
    ``job.submitted`` (``sizes``), whenever that came."""
    lost: dict[str, float] = defaultdict(float)
    for f in window.failures:
        lost[f.job] += f.lost_s or 0.0  # unknown (sacct): not counted as lost
    checkpoint: dict[str, float] = defaultdict(float)
    for cp in window.checkpoints:
        if cp.completed_us is not None and cp.duration_s is not None:
            checkpoint[cp.job] += cp.duration_s
    rows = []
    for name, info in window.jobs.items():
        gpus = sizes.jobs[name].gpus if name in sizes.jobs else None
        wall_s = (info.last_us - info.first_us) / US
        restart_s = sum(info.restart_overheads_s)
        productive_s = max(0.0, wall_s - lost[name] - restart_s - checkpoint[name])
        rows.append({
            "job": name, "gpus": gpus, "failures": info.failures,
            "wall_h": _sql_round(wall_s / 3600, 3),
            "lost_gpu_hours": _sql_round((lost[name] + restart_s) * (gpus or 0) / 3600, 2),
            "ettr": _sql_round(productive_s / wall_s, 4) if wall_s > 0 else None,
        })
    return sorted(rows, key=lambda r: (-r["lost_gpu_hours"], r["job"]))


def fleet_goodput(con: duckdb.DuckDBPyConnection, since_us: int, until_us: int) -> float | None:
    """The fleet's ETTR over ``[since_us, until_us)``: productive GPU-time ÷ wall GPU-time summed
    over the jobs with events in it (``jobs_goodput``'s accounting, weighted by each job's GPUs);
    None without a job of known size."""
    window = fold_store(con, JOB_TYPES, since_us=since_us, until_us=until_us).jobs
    sizes = fold_store(con, ("job.submitted",), until_us=until_us).jobs
    productive = wall = 0.0
    for row in jobs_goodput(window, sizes):
        if row["gpus"] and row["ettr"] is not None and row["wall_h"] > 0:
            wall += row["gpus"] * row["wall_h"]
            productive += row["gpus"] * row["wall_h"] * row["ettr"]
    return productive / wall if wall > 0 else None


def mtbf_trend(con: duckdb.DuckDBPyConnection, w: Window) -> list[dict[str, Any]]:
    """Node-hours between incidents per bucket (None when a bucket had no incident)."""
    return _records(con, f"""
        WITH buckets AS (
            SELECT unnest(generate_series(date_trunc('{w.bucket}', ?::TIMESTAMPTZ),
                                          ?::TIMESTAMPTZ, INTERVAL 1 {w.bucket})) AS bucket),
        fleet AS (SELECT count(*) AS nodes FROM nodes),
        fails AS (
            SELECT date_trunc('{w.bucket}', start_ts) AS bucket, count(*) AS incidents
            FROM incidents WHERE start_ts BETWEEN ? AND ? GROUP BY ALL)
        SELECT b.bucket, coalesce(f.incidents, 0) AS incidents,
            CASE WHEN coalesce(f.incidents, 0) > 0 THEN round(
                (SELECT nodes FROM fleet) * {1 if w.bucket == 'hour' else 24} / f.incidents, 1)
            END AS mtbf_node_hours
        FROM buckets b LEFT JOIN fails f USING (bucket) ORDER BY b.bucket""",
        [w.start, w.end, w.start, w.end])


def worst_components(con: duckdb.DuckDBPyConnection, w: Window) -> list[dict[str, Any]]:
    return _records(con, """
        WITH hits AS (
            SELECT root_entity AS entity, 1 AS incidents, 0 AS fatal_xids FROM incidents
            WHERE start_ts BETWEEN ? AND ?
            UNION ALL
            SELECT 'gpu:' || node || '/' || coalesce(gpu::VARCHAR, '?'), 0, 1 FROM xid_events
            WHERE ts BETWEEN ? AND ? AND fatal)
        SELECT entity, sum(incidents) AS n_incidents, sum(fatal_xids) AS n_fatal_xids FROM hits
        GROUP BY entity ORDER BY n_incidents + n_fatal_xids DESC, entity LIMIT 10""",
        [w.start, w.end, w.start, w.end])


def rack_error_heatmap(con: duckdb.DuckDBPyConnection, w: Window) -> list[dict[str, Any]]:
    """Errors per rack and bucket: XIDs on the rack's nodes plus incidents rooted there."""
    return _records(con, f"""
        WITH errs AS (
            SELECT x.node, x.ts FROM xid_events x WHERE x.ts BETWEEN ? AND ?
            UNION ALL
            SELECT split_part(split_part(root_entity, ':', 2), '/', 1) AS node, start_ts
            FROM incidents WHERE start_ts BETWEEN ? AND ?
                AND (root_entity LIKE 'gpu:%' OR root_entity LIKE 'node:%'
                     OR root_entity LIKE 'nic:%'))
        SELECT n.rack, date_trunc('{w.bucket}', e.ts) AS bucket, count(*) AS errors
        FROM errs e JOIN nodes n USING (node)
        GROUP BY ALL ORDER BY n.rack, bucket""", [w.start, w.end, w.start, w.end])


def report_data(con: duckdb.DuckDBPyConnection, w: Window) -> dict[str, Any]:
    start_us, end_us = to_us(w.start), to_us(w.end) + 1  # the window includes its end
    health = fold_store(con, (*INVENTORY_TYPES, *HOST_TYPES), until_us=end_us).health
    window = fold_store(con, JOB_TYPES, since_us=start_us, until_us=end_us).jobs
    sizes = fold_store(con, ("job.submitted",)).jobs
    jobs = jobs_goodput(window, sizes)
    total_lost = round(sum(j["lost_gpu_hours"] or 0 for j in jobs), 2)
    return {
        "window": {"start": w.start, "end": w.end, "hours": round(w.hours, 3),
                   "bucket": w.bucket},
        "fleet": fleet_health(con, w, health, window),
        "incidents_by_category": incidents_by_category(con, w),
        "incidents": incidents(con, w),
        "actions_taken": actions_taken(con, w),
        "job_outcomes": job_outcomes(con, w),
        "jobs": jobs,
        "lost_gpu_hours": total_lost,
        "mtbf_trend": mtbf_trend(con, w),
        "worst_components": worst_components(con, w),
        "rack_errors": rack_error_heatmap(con, w),
    }
