"""The store's schema: versioned migrations, raw append-only tables, public SQL views.

Raw tables (``*_raw``, ``event_log``) are the landed events and only ever grow. The public views
(docs/design.md#the-store: ``gpu_samples``, ``port_samples``, ``xid_events``, ``job_events``,
``nodes``, ``truth_faults``, ``incidents``, ``recommendations``, ``dead_letters``) are the stable
SQL surface; they exist even when empty. All times are UTC ``TIMESTAMPTZ``; columns carry their
units.

Schema creation is idempotent and versioned: ``MIGRATIONS`` is append-only, each step applied once
inside a transaction and recorded in ``schema_migrations``.

A store file is data, not code: the SQL of its views is never trusted. Writers re-create any public
view whose SQL is not fleetlog's (``ensure_schema``), readers define them afresh as TEMP views
(``database``), and both refuse a file whose raw tables were replaced by views (``check_catalog``),
so no SQL written into a file runs in fleetlog.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import re
from collections.abc import Sequence
from importlib import resources
from typing import Final

import duckdb

from fleetlog.ingest.contract import (
    GPU_SIGNALS,
    JOB_OUTCOME_STATES,
    NODE_EVIDENCE_STATES,
    PORT_SIGNALS,
    FleetlogError,
    Signal,
)
from fleetlog.ingest.store import rollups

_SQL_TYPES: Final = {"<f4": "FLOAT", "<f8": "DOUBLE"}


class StoreError(FleetlogError):
    """Root of store errors; the message says what to do."""


class StoreLocked(StoreError):
    """Another process (usually an ingester) holds the write lock on the database file."""


class StoreMissing(StoreError):
    """The database file does not exist."""


class StoreTampered(StoreError):
    """The file's catalog is not fleetlog's: a raw table is a view, or a public view a table."""


def _signal_columns(signals: Sequence[Signal]) -> str:
    return ",\n    ".join(f"{s.column} {_SQL_TYPES[s.dtype]}" for s in signals)


_V1_TABLES: Final = [
    """CREATE TABLE event_log (
    event_id VARCHAR NOT NULL,
    type VARCHAR NOT NULL,
    v INTEGER NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    source VARCHAR NOT NULL,
    key VARCHAR NOT NULL,
    rows INTEGER NOT NULL,       -- sample rows carried (0 for non-sample events)
    payload JSON,                -- the payload, except for sample batches (kept column-wise)
    landed_at TIMESTAMPTZ NOT NULL
)""",
    f"""CREATE TABLE gpu_samples_raw (
    event_id VARCHAR NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    node VARCHAR NOT NULL,
    gpu UTINYINT NOT NULL,
    {_signal_columns(GPU_SIGNALS)}
)""",
    f"""CREATE TABLE port_samples_raw (
    event_id VARCHAR NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    switch VARCHAR NOT NULL,
    port USMALLINT NOT NULL,
    {_signal_columns(PORT_SIGNALS)}
)""",
    """CREATE TABLE xid_raw (
    event_id VARCHAR NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    node VARCHAR NOT NULL,
    gpu INTEGER,
    pci_bus_id VARCHAR,
    xid INTEGER NOT NULL,
    message VARCHAR,
    pid BIGINT,
    source VARCHAR NOT NULL
)""",
    """CREATE TABLE host_events_raw (
    event_id VARCHAR NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    node VARCHAR NOT NULL,
    type VARCHAR NOT NULL,
    reason VARCHAR
)""",
    """CREATE TABLE job_events_raw (
    event_id VARCHAR NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    job VARCHAR NOT NULL,
    type VARCHAR NOT NULL,
    payload JSON NOT NULL
)""",
    """CREATE TABLE inventory_raw (
    event_id VARCHAR NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    type VARCHAR NOT NULL,
    entity VARCHAR NOT NULL,
    payload JSON NOT NULL
)""",
    """CREATE TABLE truth_raw (
    event_id VARCHAR NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    fault_id VARCHAR NOT NULL,
    category VARCHAR NOT NULL,
    entity VARCHAR NOT NULL,
    start_ts TIMESTAMPTZ NOT NULL,
    end_ts TIMESTAMPTZ,
    affected VARCHAR[] NOT NULL,
    scenario VARCHAR,
    detail VARCHAR
)""",
    """CREATE TABLE incidents_raw (
    event_id VARCHAR NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    incident_id VARCHAR NOT NULL,
    start_ts TIMESTAMPTZ NOT NULL,
    end_ts TIMESTAMPTZ,
    category VARCHAR NOT NULL,
    root_entity VARCHAR NOT NULL,
    confidence DOUBLE NOT NULL,
    candidates JSON NOT NULL,
    evidence VARCHAR[] NOT NULL
)""",
    """CREATE TABLE recommendations_raw (
    event_id VARCHAR NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    incident_id VARCHAR NOT NULL,
    target VARCHAR NOT NULL,
    action VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    gpu_hours_saved DOUBLE NOT NULL
)""",
    """CREATE TABLE dead_letters_raw (
    received_at TIMESTAMPTZ NOT NULL,
    origin VARCHAR NOT NULL,     -- Kafka topic, or the file path
    partition INTEGER,           -- Kafka partition (NULL for files)
    "offset" BIGINT,             -- Kafka offset, or the line number in the file
    stage VARCHAR NOT NULL,      -- envelope | type | version | payload | validate | parse
    error VARCHAR NOT NULL,
    event_type VARCHAR,
    event_id VARCHAR,
    raw BLOB
)""",
    """CREATE TABLE ingest_offsets (
    topic VARCHAR NOT NULL,
    partition INTEGER NOT NULL,
    next_offset BIGINT NOT NULL, -- the first offset not yet landed
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (topic, partition)
)""",
    """CREATE TABLE xid_catalog (
    xid INTEGER PRIMARY KEY,
    name VARCHAR NOT NULL,
    action VARCHAR NOT NULL,      -- NVIDIA's immediate action, as the catalog writes it
    fatal BOOLEAN NOT NULL
)""",
]

_GPU_COLS: Final = ", ".join(s.column for s in GPU_SIGNALS)
_PORT_COLS: Final = ", ".join(s.column for s in PORT_SIGNALS)

# Public views: the contract surface. Recreated on every ensure_schema (cheap, and keeps them in
# step with the code), which leaves the catalog unchanged when nothing changed.
def _sql_set(values: frozenset[str]) -> str:
    return ", ".join(f"'{v}'" for v in sorted(values))


# How each job run ended, as the scheduler (or the launcher) said: ``state`` is the scheduler's
# end state (NULL when the reason is the launcher's own words), ``account`` whose account the end
# is on: ``job`` (its code, limits, owner or the scheduler's policy: no incident), ``node``
# (NODE_FAIL, BOOT_FAIL: evidence about its nodes) or NULL (not a scheduler state).
_JOB_OUTCOMES: Final = f"""SELECT ts, job, type, state,
        CASE WHEN state IN ({_sql_set(NODE_EVIDENCE_STATES)}) THEN 'node'
             WHEN state IS NOT NULL THEN 'job' END AS account,
        exit_code, cancelled_by, reason, event_id
    FROM (SELECT ts, job, type,
        CASE WHEN type = 'job.completed' THEN 'COMPLETED'
             WHEN type = 'job.cancelled' THEN 'CANCELLED'
             WHEN upper(rtrim(split_part(trim(payload->>'reason'), ' ', 1), '+'))
                  IN ({_sql_set(JOB_OUTCOME_STATES | NODE_EVIDENCE_STATES)})
             THEN upper(rtrim(split_part(trim(payload->>'reason'), ' ', 1), '+')) END AS state,
        TRY_CAST(payload->>'exit_code' AS INTEGER) AS exit_code,
        nullif(payload->>'by', '') AS cancelled_by, payload->>'reason' AS reason, event_id
        FROM job_events_raw
        WHERE type IN ('job.failed', 'job.completed', 'job.cancelled')
           OR (type = 'job.restarted' AND upper(payload->>'reason') LIKE 'REQUEUED%'))"""

PUBLIC_VIEWS: Final = {
    "gpu_samples": f"SELECT ts, node, gpu, {_GPU_COLS}, event_id FROM gpu_samples_raw",
    "port_samples": f"SELECT ts, switch, port, {_PORT_COLS}, event_id FROM port_samples_raw",
    "xid_events": """SELECT x.ts, x.node, x.gpu, x.xid,
        coalesce(c.name, 'UNKNOWN_XID') AS name,
        coalesce(c.action, 'UNKNOWN') AS action,
        coalesce(c.fatal, false) AS fatal,
        x.source, x.pci_bus_id, x.message, x.pid, x.event_id
    FROM xid_raw x LEFT JOIN xid_catalog c USING (xid)""",
    "host_events": "SELECT ts, node, type, reason, event_id FROM host_events_raw",
    "job_events": """SELECT ts, job, type,
        TRY_CAST(payload->>'step' AS BIGINT) AS step,
        TRY_CAST(payload->>'step_time_s' AS DOUBLE) AS step_time_s,
        TRY_CAST(payload->>'tokens_per_s' AS DOUBLE) AS tokens_per_s,
        TRY_CAST(payload->>'duration_s' AS DOUBLE) AS duration_s,
        TRY_CAST(payload->>'exit_code' AS INTEGER) AS exit_code,
        payload->>'reason' AS reason,
        payload, event_id
    FROM job_events_raw""",
    "nodes": """SELECT payload->>'node' AS node, payload->>'rack' AS rack,
        payload->>'region' AS region, payload->>'vcluster' AS vcluster,
        CAST(payload->>'gpu_count' AS INTEGER) AS gpu_count, payload->>'gpu_model' AS gpu_model,
        CAST(payload->>'nic_count' AS INTEGER) AS nic_count,
        CAST(payload->>'spare' AS BOOLEAN) AS spare, ts AS registered_ts
    FROM inventory_raw WHERE type = 'node.registered'
    QUALIFY row_number() OVER (PARTITION BY entity ORDER BY ts DESC, event_id DESC) = 1""",
    "gpus": """SELECT payload->>'node' AS node, CAST(payload->>'gpu' AS INTEGER) AS gpu,
        payload->>'pci_bus_id' AS pci_bus_id, payload->>'uuid' AS uuid,
        payload->>'model' AS model, ts AS registered_ts
    FROM inventory_raw WHERE type = 'gpu.registered'
    QUALIFY row_number() OVER (PARTITION BY entity ORDER BY ts DESC, event_id DESC) = 1""",
    "job_outcomes": _JOB_OUTCOMES,
    "racks": """SELECT payload->>'rack' AS rack, payload->>'region' AS region,
        payload->>'pdu' AS pdu, payload->>'cooling_zone' AS cooling_zone
    FROM inventory_raw WHERE type = 'rack.registered'
    QUALIFY row_number() OVER (PARTITION BY entity ORDER BY ts DESC, event_id DESC) = 1""",
    "switches": """SELECT payload->>'switch' AS switch, payload->>'tier' AS tier,
        payload->>'region' AS region
    FROM inventory_raw WHERE type = 'switch.registered'
    QUALIFY row_number() OVER (PARTITION BY entity ORDER BY ts DESC, event_id DESC) = 1""",
    "links": """SELECT payload->>'switch' AS switch, CAST(payload->>'port' AS INTEGER) AS port,
        payload->>'peer' AS peer
    FROM inventory_raw WHERE type = 'link.registered'""",
    "truth_faults": """SELECT fault_id, category, entity, start_ts, end_ts, affected, scenario,
        detail FROM truth_raw""",
    "incidents": """SELECT incident_id, start_ts, end_ts, category, root_entity, confidence,
        candidates, evidence FROM incidents_raw
    QUALIFY row_number() OVER (PARTITION BY incident_id ORDER BY ts DESC, event_id DESC) = 1""",
    # catalog_action: NVIDIA's action for the XID the recommendation follows, as its reason
    # states it (analysis.remediation writes "XID n: NVIDIA's catalog says ACTION"); NULL when the
    # category, not an XID, decided. Read from the reason, so every stored row has it.
    "recommendations": """SELECT incident_id, ts, target, action, reason, gpu_hours_saved,
        event_id, after,
        nullif(regexp_extract(reason, 'NVIDIA''s catalog says ([A-Z0-9_]+)', 1), '')
            AS catalog_action
    FROM recommendations_raw""",
    "dead_letters": """SELECT received_at, origin, partition, "offset", stage, error, event_type,
        event_id, raw FROM dead_letters_raw""",
}

# Version 2: ``recommendations_raw.after``, the recommendation to carry out first. Stores of
# version 1 kept it in the event's payload only (the event log): it is copied from there.
_V2_AFTER: Final = [
    "ALTER TABLE recommendations_raw ADD COLUMN after VARCHAR",
    """UPDATE recommendations_raw SET after = l.payload->>'after' FROM event_log l
    WHERE l.event_id = recommendations_raw.event_id AND l.type = 'recommendation.issued'
        AND l.payload->>'after' IS NOT NULL""",
]

# (version, statements). Append only: never edit a released step, add a new one.
# Version 3: the record of the hourly rollups (``rollups``; their tables are made from their SQL).
_V3_ROLLUPS: Final = [rollups.CHUNKS_TABLE]

MIGRATIONS: Final[list[tuple[int, list[str]]]] = [
    (1, _V1_TABLES), (2, _V2_AFTER), (3, _V3_ROLLUPS)]

# How a shard that predates a column reads as the current schema (shards in a union are opened
# read-only, so they keep the version they were written with): table -> (the column, the select
# giving it, ``{t}`` the shard's table and ``{s}`` its schema). Add one with each step that
# adds a column; a table missing a column with no entry here is read with NULLs in it.
COLUMNS_ADDED: Final[dict[str, tuple[str, str]]] = {
    "recommendations_raw": ("after", "(SELECT r.*, l.payload->>'after' AS after FROM {t} r "
                            "LEFT JOIN (SELECT event_id, payload FROM {s}.event_log "
                            "WHERE type = 'recommendation.issued') l USING (event_id))"),
}
SCHEMA_VERSION: Final = MIGRATIONS[-1][0]

# Every table fleetlog creates: fleetlog's SQL reads these names, so in a file they must be tables
# (a view in their place would run the file's SQL in fleetlog; ``check_catalog``).
RAW_TABLES: Final = (
    *(m.group(1) for m in (re.match(r"CREATE TABLE (\w+)", s) for s in _V1_TABLES) if m),
    "schema_migrations", "schema_meta", *rollups.TABLES,
)


def load_xid_catalog() -> list[tuple[int, str, str, bool]]:
    """NVIDIA's XID catalog (via NVSentinel): (xid, name, action, fatal)."""
    catalog = resources.files("fleetlog.ingest.store").joinpath("catalog/xid_catalog.csv")
    text = catalog.read_text("utf-8")
    rows: list[tuple[int, str, str, bool]] = []
    for record in csv.reader(text.splitlines()):
        if len(record) < 4 or not record[0].strip().isdigit():
            continue
        rows.append(
            (int(record[0]), record[1].strip(), record[2].strip(), record[3].strip() == "FATAL")
        )
    return rows


def check_catalog(con: duckdb.DuckDBPyConnection, database: str, where: str, *,
                  views_too: bool = False) -> None:
    """Refuse a store whose catalog is not fleetlog's: one of its tables is a view (whose SQL,
    written by whoever wrote the file, fleetlog would run) or, with ``views_too`` (writers, which
    replace the public views in the file), a public view's name is taken by another object."""
    rows = con.execute(
        "SELECT 'view', view_name FROM duckdb_views() WHERE database_name = $db "
        "AND schema_name = 'main' AND NOT temporary AND list_contains($raw, view_name) "
        "UNION ALL SELECT 'table', table_name FROM duckdb_tables() WHERE database_name = $db "
        "AND schema_name = 'main' AND NOT temporary AND list_contains($public, table_name) "
        "ORDER BY 2",
        {"db": database, "raw": list(RAW_TABLES),
         "public": list(PUBLIC_VIEWS) if views_too else []}).fetchall()
    if rows:
        kind, name = rows[0]
        expected = "table" if kind == "view" else "view"
        raise StoreTampered(
            f"{where} was changed outside fleetlog: `{name}` is a {kind} where fleetlog keeps a "
            f"{expected}; not opening it (its SQL would run in fleetlog)")


@functools.cache
def _rendered_views() -> dict[str, str]:
    """The public views' SQL as DuckDB prints it (``duckdb_views().sql``), from a scratch store:
    what a file's views must read to be fleetlog's."""
    con = duckdb.connect(":memory:")
    try:
        for _version, statements in MIGRATIONS:
            for statement in statements:
                con.execute(statement)
        for name, body in PUBLIC_VIEWS.items():
            con.execute(f"CREATE VIEW {name} AS {body}")
        rows = con.execute("SELECT view_name, sql FROM duckdb_views() "
                           "WHERE NOT internal AND NOT temporary").fetchall()
    finally:
        con.close()
    return {str(name): str(sql) for name, sql in rows}


def _views_are_ours(con: duckdb.DuckDBPyConnection) -> bool:
    rows = con.execute("SELECT view_name, sql FROM duckdb_views() "
                       "WHERE database_name = current_database() AND schema_name = 'main' "
                       "AND NOT temporary AND NOT internal").fetchall()
    stored = {str(name): str(sql) for name, sql in rows}
    return all(stored.get(name) == sql for name, sql in _rendered_views().items())


def ensure_schema(con: duckdb.DuckDBPyConnection) -> int:
    """Create or upgrade the schema; returns the version. Running it again changes nothing.

    The public views are re-created unless each one's SQL is exactly fleetlog's: the file's own
    view SQL (which anyone who can write the file can change) never survives a writer's open.
    """
    con.execute("SET TimeZone = 'UTC'")
    row = con.execute("SELECT database_name, coalesce(path, database_name) FROM duckdb_databases() "
                      "WHERE database_name = current_database()").fetchone()
    database, where = (str(row[0]), str(row[1])) if row else ("memory", "memory")
    check_catalog(con, database, where, views_too=True)
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL)"
    )
    row = con.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
    current = int(row[0]) if row else 0
    for version, statements in MIGRATIONS:
        if version <= current:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            for statement in statements:
                con.execute(statement)
            if version == 1:
                con.executemany(
                    "INSERT INTO xid_catalog VALUES (?, ?, ?, ?)", load_xid_catalog()
                )
            con.execute(
                "INSERT INTO schema_migrations VALUES (?, current_timestamp)", [version]
            )
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
    views_hash = hashlib.sha256(repr(sorted(PUBLIC_VIEWS.items())).encode()).hexdigest()
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)"
    )
    row = con.execute("SELECT value FROM schema_meta WHERE key = 'views_hash'").fetchone()
    if row is None or row[0] != views_hash or not _views_are_ours(con):
        # DuckDB re-renders view SQL, so a hash of our definitions says whether they changed,
        # and the SQL DuckDB prints for them whether the file's views are still ours.
        con.execute("BEGIN TRANSACTION")
        for name, body in PUBLIC_VIEWS.items():
            con.execute(f"CREATE OR REPLACE VIEW {name} AS {body}")
        con.execute("INSERT OR REPLACE INTO schema_meta VALUES ('views_hash', ?)", [views_hash])
        con.execute("COMMIT")
    return SCHEMA_VERSION


