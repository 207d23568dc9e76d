"""What a batch report says, computed from the store's public views for one time window.

Every figure here is a query over views any store has (nodes, host_events, xid_events,
job_events, incidents, recommendations, dead_letters), so a report works on simulated and on
imported real data alike, and the same window always gives the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import duckdb

from fleetlog.ingest.contract.errors import FleetlogError


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
    return Window(start=end - timedelta(seconds=window_s), end=end)


def _records(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    cursor = con.execute(sql, params)
    columns = [d[0] for d in cursor.description]
    return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def fleet_health(con: duckdb.DuckDBPyConnection, w: Window) -> dict[str, Any]:
    fleet = _records(con, """SELECT count(*) AS nodes, coalesce(sum(gpu_count), 0) AS gpus,
        count(*) FILTER (WHERE spare) AS spares, count(DISTINCT rack) AS racks FROM nodes""", [])[0]
    states = _records(con, """
        WITH last AS (
            SELECT node, arg_max(type, ts) AS last_type FROM host_events WHERE ts <= ?
            GROUP BY node)
        SELECT count(*) FILTER (WHERE last_type = 'node.went_down') AS down,
               count(*) FILTER (WHERE last_type = 'node.maintenance_started') AS in_maintenance
        FROM last""", [w.end])[0]
    counts = _records(con, """SELECT
        (SELECT count(*) FROM incidents WHERE start_ts BETWEEN ? AND ?) AS incidents,
        (SELECT count(*) FROM xid_events WHERE ts BETWEEN ? AND ? AND fatal) AS fatal_xids,
        (SELECT count(*) FROM job_events WHERE ts BETWEEN ? AND ? AND type = 'job.failed')
            AS job_failures,
        (SELECT count(*) FROM dead_letters) AS dead_letters""",
        [w.start, w.end] * 3)[0]
    return {**fleet, **states, **counts}


def incidents(con: duckdb.DuckDBPyConnection, w: Window) -> list[dict[str, Any]]:
    return _records(con, """
        SELECT i.incident_id, i.start_ts, i.category, i.root_entity,
               round(i.confidence, 3) AS confidence,
               coalesce(string_agg(DISTINCT r.action || ' ' || r.target, '; '
                                   ORDER BY r.action || ' ' || r.target), '') AS actions
        FROM incidents i LEFT JOIN recommendations r USING (incident_id)
        WHERE i.start_ts BETWEEN ? AND ?
        GROUP BY ALL ORDER BY i.start_ts, i.incident_id""", [w.start, w.end])


def incidents_by_category(con: duckdb.DuckDBPyConnection, w: Window) -> list[dict[str, Any]]:
    return _records(con, """SELECT category, count(*) AS incidents FROM incidents
        WHERE start_ts BETWEEN ? AND ? GROUP BY category ORDER BY incidents DESC, category""",
        [w.start, w.end])


def jobs_goodput(con: duckdb.DuckDBPyConnection, w: Window) -> list[dict[str, Any]]:
    """Per job: ETTR = productive time ÷ wall time in the window (Meta's definition), where
    unproductive time is work lost to failures, restart overhead and checkpoint writes."""
    return _records(con, """
        WITH size AS (
            SELECT job, arg_max(TRY_CAST(payload->>'gpus' AS INTEGER), ts) AS gpus
            FROM job_events WHERE type = 'job.submitted' GROUP BY job),
        win AS (
            SELECT job,
                epoch(max(ts) - min(ts)) AS wall_s,
                coalesce(sum(TRY_CAST(payload->>'lost_s' AS DOUBLE))
                         FILTER (WHERE type = 'job.failed'), 0) AS lost_s,
                coalesce(sum(TRY_CAST(payload->>'overhead_s' AS DOUBLE))
                         FILTER (WHERE type = 'job.restarted'), 0) AS restart_s,
                coalesce(sum(duration_s) FILTER (WHERE type = 'job.checkpoint_completed'), 0)
                    AS checkpoint_s,
                count(*) FILTER (WHERE type = 'job.failed') AS failures
            FROM job_events WHERE ts BETWEEN ? AND ? GROUP BY job)
        SELECT win.job, size.gpus, win.failures,
            round(win.wall_s / 3600, 3) AS wall_h,
            round((win.lost_s + win.restart_s) * coalesce(size.gpus, 0) / 3600, 2)
                AS lost_gpu_hours,
            CASE WHEN win.wall_s > 0 THEN round(greatest(0, win.wall_s - win.lost_s
                - win.restart_s - win.checkpoint_s) / win.wall_s, 4) END AS ettr
        FROM win LEFT JOIN size USING (job)
        ORDER BY lost_gpu_hours DESC, win.job""", [w.start, w.end])


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
    jobs = jobs_goodput(con, w)
    total_lost = round(sum(j["lost_gpu_hours"] or 0 for j in jobs), 2)
    return {
        "window": {"start": w.start, "end": w.end, "hours": round(w.hours, 3),
                   "bucket": w.bucket},
        "fleet": fleet_health(con, w),
        "incidents_by_category": incidents_by_category(con, w),
        "incidents": incidents(con, w),
        "jobs": jobs,
        "lost_gpu_hours": total_lost,
        "mtbf_trend": mtbf_trend(con, w),
        "worst_components": worst_components(con, w),
        "rack_errors": rack_error_heatmap(con, w),
    }
