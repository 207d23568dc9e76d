"""The DuckDB store schema: idempotent, versioned, every public view present, UTC."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from fleetlog.ingest import store


def _catalog(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    return sorted(
        con.execute(
            "SELECT 'table', table_name, sql FROM duckdb_tables() UNION ALL "
            "SELECT 'view', view_name, sql FROM duckdb_views() WHERE NOT internal"
        ).fetchall()
    )


def _oids(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    """Object ids change when a view is recreated (they are not stable across opens)."""
    return sorted(con.execute("SELECT view_name, view_oid FROM duckdb_views() WHERE NOT internal")
                  .fetchall())


def test_creating_the_schema_twice_changes_nothing(db_path: Path) -> None:
    con = store.open_store(db_path)
    before, oids = _catalog(con), _oids(con)
    migrations = con.execute("SELECT * FROM schema_migrations").fetchall()
    catalog_rows = con.execute("SELECT count(*) FROM xid_catalog").fetchone()
    assert store.ensure_schema(con) == store.SCHEMA_VERSION
    assert _oids(con) == oids
    con.close()
    con = store.open_store(db_path)  # and once more through a fresh open
    assert _catalog(con) == before
    assert con.execute("SELECT * FROM schema_migrations").fetchall() == migrations
    assert con.execute("SELECT count(*) FROM xid_catalog").fetchone() == catalog_rows


def test_every_public_view_exists_and_is_empty(db_path: Path) -> None:
    con = store.open_store(db_path)
    contract_views = {
        "gpu_samples", "port_samples", "xid_events", "job_events", "nodes", "truth_faults",
        "incidents", "recommendations", "dead_letters",
    }
    assert contract_views <= set(store.PUBLIC_VIEWS)
    assert all(count == 0 for count in store.table_counts(con).values())


def test_public_view_columns_follow_the_contract(db_path: Path) -> None:
    con = store.open_store(db_path)

    def columns(view: str) -> list[str]:
        return [row[0] for row in con.execute(f"DESCRIBE {view}").fetchall()]

    assert columns("gpu_samples")[:3] == ["ts", "node", "gpu"]
    assert columns("port_samples")[:3] == ["ts", "switch", "port"]
    assert columns("xid_events")[:8] == ["ts", "node", "gpu", "xid", "name", "action", "fatal",
                                         "source"]
    assert columns("truth_faults")[:6] == ["fault_id", "category", "entity", "start_ts", "end_ts",
                                           "affected"]
    assert columns("incidents") == ["incident_id", "start_ts", "end_ts", "category",
                                    "root_entity", "confidence", "candidates", "evidence"]
    assert columns("recommendations") == ["incident_id", "ts", "target", "action", "reason",
                                          "gpu_hours_saved", "event_id", "after",
                                          "catalog_action"]
    assert columns("job_outcomes") == ["ts", "job", "type", "state", "account", "exit_code",
                                       "cancelled_by", "reason", "event_id"]
    assert columns("gpus") == ["node", "gpu", "pci_bus_id", "uuid", "model", "registered_ts"]
    types = dict(con.execute("SELECT column_name, data_type FROM duckdb_columns() "
                             "WHERE table_name = 'gpu_samples'").fetchall())
    assert types["ts"] == "TIMESTAMP WITH TIME ZONE"


def test_xid_catalog_is_nvidias(db_path: Path) -> None:
    con = store.open_store(db_path)
    rows = dict((x, (a, f)) for x, _n, a, f in con.execute("SELECT * FROM xid_catalog").fetchall())
    assert rows[79] == ("RESTART_BM", True)
    assert rows[48] == ("WORKFLOW_XID_48", True)
    assert rows[63] == ("IGNORE", False)
    assert len(rows) == len(store.load_xid_catalog()) > 150


def test_xid_events_view_joins_the_catalog(db_path: Path) -> None:
    con = store.open_store(db_path)
    con.execute("INSERT INTO xid_raw VALUES ('e1', '2026-01-01 00:00:00+00', 'n1', 3, NULL, 79, "
                "'fallen off the bus', NULL, 'sim'), ('e2', '2026-01-01 00:00:01+00', 'n1', 3, "
                "NULL, 9999, 'made up', NULL, 'sim')")
    rows = con.execute("SELECT xid, name, action, fatal FROM xid_events ORDER BY xid").fetchall()
    assert rows == [(79, "ROBUST_CHANNEL_GPU_HAS_FALLEN_OFF_THE_BUS", "RESTART_BM", True),
                    (9999, "UNKNOWN_XID", "UNKNOWN", False)]


def test_union_of_shards_reads_as_one_store(tmp_path: Path) -> None:
    for index in range(2):
        con = store.open_store(tmp_path / f"shard-{index}.duckdb")
        con.execute(f"INSERT INTO host_events_raw VALUES ('e{index}', now(), 'n{index}', "
                    "'node.went_down', 'psu')")
        con.close()
    union = store.open_union([tmp_path])
    assert union.execute("SELECT count(*) FROM host_events").fetchone() == (2,)
    assert union.execute("SELECT count(*) FROM xid_catalog").fetchone()[0] > 150


def _recommendations(path: Path, after: str | None, incident: str) -> None:
    """Land a checkpoint-now and a swap naming it (``after``), as `fleetlog recommend` does."""
    from fleetlog.ingest import contract as c
    from fleetlog.ingest.store.writer import land

    events = [c.make_event(c.RecommendationIssued(
        incident_id=incident, target="job:j1", action=action, reason="r", after=first),
        time_us=1_767_225_600_000_000, source="test")
        for action, first in (("checkpoint_now", None), ("swap_node", after))]
    land(path, events)


def _as_version_1(path: Path) -> None:
    """What a store written before ``recommendations_raw.after`` looks like on disk."""
    con = duckdb.connect(str(path))
    con.execute("DROP VIEW recommendations")
    con.execute("ALTER TABLE recommendations_raw DROP COLUMN after")
    con.execute("DELETE FROM schema_migrations WHERE version >= 2")
    for table in store.rollups.TABLES:  # version 3
        con.execute(f"DROP TABLE IF EXISTS {table}")
    con.execute("DELETE FROM schema_meta WHERE key = 'views_hash'")
    con.close()


def test_a_version_1_store_gets_after_from_its_event_log(tmp_path: Path) -> None:
    db = tmp_path / "old.duckdb"
    _recommendations(db, "ckpt-1", "inc-1")
    _as_version_1(db)
    con = store.open_store(db)  # opened for writing: upgraded to the current version
    try:
        assert con.execute("SELECT max(version) FROM schema_migrations").fetchone() == (
            store.SCHEMA_VERSION,)
        rows = con.execute("SELECT action, after FROM recommendations ORDER BY action"
                           ).fetchall()
    finally:
        con.close()
    assert rows == [("checkpoint_now", None), ("swap_node", "ckpt-1")]


def test_a_union_reads_after_from_shards_of_either_version(tmp_path: Path) -> None:
    _recommendations(tmp_path / "a.duckdb", "ckpt-a", "inc-a")
    _as_version_1(tmp_path / "a.duckdb")  # read-only in the union: it stays at version 1
    _recommendations(tmp_path / "b.duckdb", "ckpt-b", "inc-b")
    union = store.open_union([tmp_path])
    rows = union.execute("SELECT incident_id, after FROM recommendations "
                         "WHERE action = 'swap_node' ORDER BY incident_id").fetchall()
    assert rows == [("inc-a", "ckpt-a"), ("inc-b", "ckpt-b")]
    assert union.execute("SELECT count(*) FROM recommendations").fetchone() == (4,)


def test_missing_store_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(store.StoreMissing, match="run `fleetlog ingest`"):
        store.open_union([tmp_path / "nope.duckdb"])
    with pytest.raises(store.StoreMissing, match=r"no \*\.duckdb files"):
        store.store_files([tmp_path])
