"""Lands contract events in the DuckDB store: one transaction per batch, column-wise, deduplicated.

``StoreWriter.write_batch`` takes decoded events, dead letters and (for Kafka) the next offset of
each partition, and writes all of it in ONE transaction: rows, dead letters and offsets commit
together or not at all, so a crash neither loses nor duplicates an event. Sample batches go in as
Arrow tables (no per-row inserts); an event whose id is already stored is skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import msgspec
import numpy as np
import pyarrow as pa

from ingest import contract as c
from ingest.store import StoreError, open_store

_TS = pa.timestamp("us", tz="UTC")
_json = msgspec.json.Encoder()


@dataclass(frozen=True)
class DeadLetter:
    """Input that could not become an event, kept with where it came from and why."""

    origin: str  # Kafka topic or file path
    stage: str
    error: str
    raw: bytes | None = None
    partition: int | None = None
    offset: int | None = None  # Kafka offset, or line number for files
    event_type: str | None = None
    event_id: str | None = None

    @classmethod
    def from_failure(
        cls, failure: c.DecodeFailure, *, origin: str, raw: bytes | None,
        partition: int | None = None, offset: int | None = None,
    ) -> DeadLetter:
        return cls(
            origin=origin, stage=failure.stage, error=failure.reason, raw=raw,
            partition=partition, offset=offset, event_type=failure.event_type,
            event_id=failure.event_id,
        )


@dataclass
class BatchResult:
    events: int = 0  # newly landed
    duplicates: int = 0  # skipped: already stored, or twice in the batch
    dead_letters: int = 0
    rows: dict[str, int] = field(default_factory=dict)  # raw table -> rows added

    def add(self, other: BatchResult) -> None:
        self.events += other.events
        self.duplicates += other.duplicates
        self.dead_letters += other.dead_letters
        for table, count in other.rows.items():
            self.rows[table] = self.rows.get(table, 0) + count

    @property
    def gpu_samples(self) -> int:
        return self.rows.get("gpu_samples_raw", 0)


def _dict_array(names: list[str], counts: np.ndarray[Any, Any]) -> pa.Array:
    """Each name repeated ``counts[i]`` times, dictionary-encoded (no Python object per row)."""
    indices = np.repeat(np.arange(len(names), dtype=np.int32), counts)
    return pa.DictionaryArray.from_arrays(pa.array(indices, pa.int32()), pa.array(names, pa.string()))


def _sample_table(
    events: list[c.Envelope], signals: Sequence[c.Signal], entity_field: str,
    count_field: str, index_field: str, index_dtype: str, entity_col: str, index_col: str,
) -> pa.Table | None:
    if not events:
        return None
    names: list[str] = []
    counts: list[int] = []
    event_rows: list[int] = []
    indexes: list[np.ndarray[Any, Any]] = []
    for event in events:
        payload = event.payload
        names.extend(getattr(payload, entity_field))
        counts.extend(getattr(payload, count_field))
        index = np.frombuffer(getattr(payload, index_field), dtype=index_dtype)
        indexes.append(index)
        event_rows.append(len(index))
    rows_per_event = np.asarray(event_rows, dtype=np.int64)
    total = int(rows_per_event.sum())
    if total == 0:
        return None
    columns: dict[str, pa.Array] = {
        "event_id": _dict_array([e.id for e in events], rows_per_event),
        "ts": pa.array(
            np.repeat(np.asarray([e.time_us for e in events], dtype=np.int64), rows_per_event),
            _TS,
        ),
        entity_col: _dict_array(names, np.asarray(counts, dtype=np.int64)),
        index_col: pa.array(np.concatenate(indexes)),
    }
    for signal in signals:
        parts = []
        for event, rows in zip(events, event_rows, strict=True):
            data = event.payload.columns.get(signal.column)  # type: ignore[attr-defined]
            parts.append(
                np.frombuffer(data, dtype=signal.dtype) if data is not None
                else np.full(rows, np.nan, dtype=signal.dtype)
            )
        # from_pandas=True turns NaN into NULL: "not reported" stays distinct from zero.
        columns[signal.column] = pa.array(np.concatenate(parts), from_pandas=True)
    return pa.table(columns)


def _rows_of(payload: c.Payload) -> int:
    if isinstance(payload, c.GpuSampled | c.PortSampled):
        return payload.rows
    return 0


def _us(value: int | None) -> Any:
    return None if value is None else value


class StoreWriter:
    """Writes batches of events into an open store connection (the single writer of that file)."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self.totals = BatchResult()

    def close(self) -> None:
        self.con.close()

    def stored_offsets(self) -> dict[tuple[str, int], int]:
        """Next offset to read per (topic, partition), as committed with the rows."""
        rows = self.con.execute("SELECT topic, partition, next_offset FROM ingest_offsets")
        return {(t, p): o for t, p, o in rows.fetchall()}

    def _new_events(self, events: Sequence[c.Envelope]) -> tuple[list[c.Envelope], int]:
        unique: dict[str, c.Envelope] = {}
        for event in events:
            unique.setdefault(event.id, event)
        if not unique:
            return [], len(events)
        times = [e.time_us for e in unique.values()]
        ids = pa.table({"event_id": pa.array(list(unique), pa.string())})
        self.con.register("_fleetlog_batch_ids", ids)
        try:
            # Same id means same fact, hence same time: the time range lets DuckDB's zone maps
            # skip most of the (append-only, roughly time-ordered) log.
            seen = self.con.execute(
                "SELECT l.event_id FROM event_log l SEMI JOIN _fleetlog_batch_ids b "
                "USING (event_id) WHERE l.ts BETWEEN make_timestamptz(?) AND make_timestamptz(?)",
                [min(times), max(times)],
            ).fetchall()
        finally:
            self.con.unregister("_fleetlog_batch_ids")
        stored = {row[0] for row in seen}
        fresh = [e for i, e in unique.items() if i not in stored]
        return fresh, len(events) - len(fresh)

    def write_batch(
        self,
        events: Sequence[c.Envelope],
        dead: Sequence[DeadLetter] = (),
        offsets: Mapping[tuple[str, int], int] | None = None,
    ) -> BatchResult:
        """Land ``events``, ``dead`` letters and ``offsets`` in one transaction."""
        result = BatchResult(dead_letters=len(dead))
        self.con.execute("BEGIN TRANSACTION")
        try:
            fresh, result.duplicates = self._new_events(events)
            result.events = len(fresh)
            self._insert_all(fresh, result)
            if dead:
                self._insert_dead(dead)
            for (topic, partition), next_offset in (offsets or {}).items():
                self.con.execute(
                    "INSERT OR REPLACE INTO ingest_offsets VALUES (?, ?, ?, current_timestamp)",
                    [topic, partition, next_offset],
                )
            self.con.execute("COMMIT")
        except BaseException as exc:
            self.con.execute("ROLLBACK")
            if isinstance(exc, duckdb.Error):
                raise _storage_error(exc) from exc
            raise
        self.totals.add(result)
        return result

    def _append(self, table: str, data: pa.Table | None, result: BatchResult) -> None:
        if data is None or data.num_rows == 0:
            return
        name = f"_fleetlog_{table}"
        self.con.register(name, data)
        try:
            self.con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM {name}")
        finally:
            self.con.unregister(name)
        result.rows[table] = result.rows.get(table, 0) + data.num_rows

    def _insert_all(self, events: list[c.Envelope], result: BatchResult) -> None:
        if not events:
            return
        by_type: dict[type[c.Payload], list[c.Envelope]] = {}
        for event in events:
            by_type.setdefault(type(event.payload), []).append(event)
        self._append("event_log", pa.table({
            "event_id": [e.id for e in events],
            "type": [e.type for e in events],
            "v": pa.array([e.v for e in events], pa.int32()),
            "ts": pa.array([e.time_us for e in events], _TS),
            "source": [e.source for e in events],
            "key": [e.key for e in events],
            "rows": pa.array([_rows_of(e.payload) for e in events], pa.int32()),
            "payload": [
                None if isinstance(e.payload, c.GpuSampled | c.PortSampled)
                else _json.encode(e.payload).decode()
                for e in events
            ],
            "landed_at": pa.array([_now_us()] * len(events), _TS),
        }), result)
        self._append("gpu_samples_raw", _sample_table(
            by_type.get(c.GpuSampled, []), c.GPU_SIGNALS, "nodes", "gpu_count", "gpu", "u1",
            "node", "gpu",
        ), result)
        self._append("port_samples_raw", _sample_table(
            by_type.get(c.PortSampled, []), c.PORT_SIGNALS, "switches", "port_count", "port",
            "<u2", "switch", "port",
        ), result)
        for payload_type, (table, build) in _ROW_TABLES.items():
            batch = by_type.get(payload_type)
            if batch:
                self._append(table, _rows_table(batch, build), result)
        for payload_type in _HOST_TYPES:
            batch = by_type.get(payload_type)
            if batch:
                self._append("host_events_raw", _rows_table(batch, _host_row), result)
        for payload_type in _JOB_TYPES:
            batch = by_type.get(payload_type)
            if batch:
                self._append("job_events_raw", _rows_table(batch, _job_row), result)
        for payload_type in _INVENTORY_TYPES:
            batch = by_type.get(payload_type)
            if batch:
                self._append("inventory_raw", _rows_table(batch, _inventory_row), result)

    def _insert_dead(self, dead: Sequence[DeadLetter]) -> None:
        table = pa.table({
            "received_at": pa.array([_now_us()] * len(dead), _TS),
            "origin": [d.origin for d in dead],
            "partition": pa.array([d.partition for d in dead], pa.int32()),
            "offset": pa.array([d.offset for d in dead], pa.int64()),
            "stage": [d.stage for d in dead],
            "error": [d.error for d in dead],
            "event_type": pa.array([d.event_type for d in dead], pa.string()),
            "event_id": pa.array([d.event_id for d in dead], pa.string()),
            "raw": pa.array([d.raw for d in dead], pa.binary()),
        })
        self._append("dead_letters_raw", table, BatchResult())


def _now_us() -> int:
    import time

    return time.time_ns() // 1000


Row = dict[str, Any]


def _rows_table(events: list[c.Envelope], build: Callable[[c.Envelope], Row]) -> pa.Table:
    rows = [build(e) for e in events]
    columns = {key: [row[key] for row in rows] for key in rows[0]}
    table = pa.table(columns)
    for name in ("ts", "start_ts", "end_ts"):
        if name in table.column_names:
            index = table.column_names.index(name)
            table = table.set_column(index, name, pa.array(columns[name], _TS))
    return table


def _xid_row(e: c.Envelope) -> Row:
    p = e.payload
    assert isinstance(p, c.XidReported)
    return {"event_id": e.id, "ts": e.time_us, "node": p.node, "gpu": p.gpu,
            "pci_bus_id": p.pci_bus_id, "xid": p.xid, "message": p.message, "pid": p.pid,
            "source": e.source}


def _truth_row(e: c.Envelope) -> Row:
    p = e.payload
    assert isinstance(p, c.FaultInjected)
    return {"event_id": e.id, "ts": e.time_us, "fault_id": p.fault_id, "category": p.category,
            "entity": p.entity, "start_ts": p.start_us, "end_ts": _us(p.end_us),
            "affected": list(p.affected), "scenario": p.scenario, "detail": p.detail}


def _incident_row(e: c.Envelope) -> Row:
    p = e.payload
    assert isinstance(p, c.IncidentOpened)
    return {"event_id": e.id, "ts": e.time_us, "incident_id": p.incident_id,
            "start_ts": p.start_us, "end_ts": _us(p.end_us), "category": p.category,
            "root_entity": p.root_entity, "confidence": p.confidence,
            "candidates": _json.encode(p.candidates).decode(), "evidence": list(p.evidence)}


def _recommendation_row(e: c.Envelope) -> Row:
    p = e.payload
    assert isinstance(p, c.RecommendationIssued)
    return {"event_id": e.id, "ts": e.time_us, "incident_id": p.incident_id, "target": p.target,
            "action": p.action, "reason": p.reason, "gpu_hours_saved": p.gpu_hours_saved}


def _host_row(e: c.Envelope) -> Row:
    p = e.payload
    return {"event_id": e.id, "ts": e.time_us, "node": getattr(p, "node", ""), "type": e.type,
            "reason": getattr(p, "reason", None)}


def _job_row(e: c.Envelope) -> Row:
    p = e.payload
    return {"event_id": e.id, "ts": e.time_us, "job": getattr(p, "job", ""), "type": e.type,
            "payload": _json.encode(p).decode()}


def _inventory_row(e: c.Envelope) -> Row:
    return {"event_id": e.id, "ts": e.time_us, "type": e.type, "entity": e.key,
            "payload": _json.encode(e.payload).decode()}


_ROW_TABLES: dict[type[c.Payload], tuple[str, Callable[[c.Envelope], Row]]] = {
    c.XidReported: ("xid_raw", _xid_row),
    c.FaultInjected: ("truth_raw", _truth_row),
    c.IncidentOpened: ("incidents_raw", _incident_row),
    c.RecommendationIssued: ("recommendations_raw", _recommendation_row),
}
_HOST_TYPES = (c.NodeWentDown, c.NodeCameUp, c.NodeMaintenanceStarted, c.NodeMaintenanceEnded)
_JOB_TYPES = tuple(t for t in c.PAYLOAD_TYPES.values() if t.TOPIC == "jobs")
_INVENTORY_TYPES = (c.RackRegistered, c.NodeRegistered, c.SwitchRegistered, c.LinkRegistered)


def _storage_error(exc: duckdb.Error) -> StoreError:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "No space left" in text or "disk" in text.lower():
        return StoreError(f"the disk is full ({text}): free space, then run again; "
                          "nothing of the failed batch was kept")
    return StoreError(f"writing the batch failed ({text}); nothing of it was kept")


def open_writer(path: str | Path) -> StoreWriter:
    """Open (creating or upgrading) a store file for writing."""
    return StoreWriter(open_store(path))


def land(path: str | Path, events: Sequence[c.Envelope]) -> BatchResult:
    """Write a list of events to a store file in one batch (tests, small imports)."""
    writer = open_writer(path)
    try:
        return writer.write_batch(events)
    finally:
        writer.close()
