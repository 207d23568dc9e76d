"""Contract events -> Arrow tables, one per raw store table, column-wise and without per-row SQL.

``event_tables`` groups a batch of events by payload type and builds the Arrow table of each raw
table they land in (``event_log`` always). Sample batches become one buffer per column: the
per-event column bytes are joined in C and viewed once by numpy, so the cost per event is a few
attribute reads, never one numpy call per event and signal. NaN becomes NULL ("not reported" is
not zero). Everything here is pure: no DuckDB, so it runs (and is tested) without a store.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import msgspec
import numpy as np
import pyarrow as pa

from fleetlog.ingest import contract as c

if TYPE_CHECKING:
    from fleetlog.ingest.contract import DeadLetter

TS: Final = pa.timestamp("us", tz="UTC")
_json = msgspec.json.Encoder()
Row = dict[str, Any]


def now_us() -> int:
    return time.time_ns() // 1000


def _dict_array(names: list[str], counts: np.ndarray[Any, Any]) -> pa.Array:
    """Each name repeated ``counts[i]`` times, dictionary-encoded (no Python object per row)."""
    indices = np.repeat(np.arange(len(names), dtype=np.int32), counts)
    return pa.DictionaryArray.from_arrays(pa.array(indices, pa.int32()),
                                          pa.array(names, pa.string()))


def sample_table(
    events: Sequence[c.Envelope], signals: Sequence[c.Signal], entity_field: str,
    count_field: str, index_field: str, index_dtype: str, entity_col: str, index_col: str,
) -> pa.Table | None:
    """One Arrow table for all sample rows of ``events``.

    Messages of one shape (row count and signal list: every rack of a healthy fleet) are cut
    into columns together: their ``values`` buffers are joined once, viewed as a matrix of one
    row per message, and each signal is one strided copy out of it. Signals a message does not
    carry are NULL ("not reported" is not zero), as are NaN values.
    """
    if not events:
        return None
    shapes: dict[tuple[int, tuple[str, ...]], list[c.Envelope]] = {}
    for event in events:
        payload = event.payload
        key = (len(getattr(payload, index_field)), tuple(getattr(payload, "signals")))  # noqa: B009
        group = shapes.get(key)
        if group is None:
            shapes[key] = [event]
        else:
            group.append(event)
    parts = [_shape_table(group, signals, entity_field, count_field, index_field, index_dtype,
                          entity_col, index_col, list(names))
             for (_, names), group in shapes.items()]
    parts = [part for part in parts if part.num_rows]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else pa.concat_tables(parts)


def _shape_table(
    events: list[c.Envelope], signals: Sequence[c.Signal], entity_field: str,
    count_field: str, index_field: str, index_dtype: str, entity_col: str, index_col: str,
    present: list[str],
) -> pa.Table:
    """The rows of same-shaped messages (same index length, same signal list)."""
    payloads = [e.payload for e in events]
    count = len(events)
    index = np.frombuffer(b"".join([getattr(p, index_field) for p in payloads]),
                          dtype=index_dtype)
    rows = len(index) // count  # rows per message
    if rows == 0:
        return pa.table({})  # scrapes that found nothing: no rows
    names: list[str] = []
    counts: list[int] = []
    for p in payloads:
        names.extend(getattr(p, entity_field))
        counts.extend(getattr(p, count_field))
    rows_per_event = np.full(count, rows, dtype=np.int64)
    columns: dict[str, pa.Array] = {
        "event_id": _dict_array([e.id for e in events], rows_per_event),
        "ts": pa.array(np.repeat(np.fromiter((e.time_us for e in events), np.int64, count),
                                 rows), TS),
        entity_col: _dict_array(names, np.asarray(counts, dtype=np.int64)),
        index_col: pa.array(index),
    }
    values = np.frombuffer(b"".join([getattr(p, "values") for p in payloads]),  # noqa: B009
                           dtype=np.uint8)
    matrix = values.reshape(count, -1) if count else values.reshape(0, 0)
    offsets: dict[str, tuple[int, int]] = {}
    offset = 0
    for name in present:
        size = rows * c.SIGNAL_WIDTHS[name]
        offsets[name] = (offset, offset + size)
        offset += size
    total = count * rows
    for signal in signals:
        span = offsets.get(signal.column)
        if span is None:
            columns[signal.column] = pa.nulls(total, _ARROW_TYPES[signal.dtype])
            continue
        data = np.ascontiguousarray(matrix[:, span[0]:span[1]]).view(signal.dtype).ravel()
        # from_pandas=True turns NaN into NULL: "not reported" stays distinct from zero.
        columns[signal.column] = pa.array(data, from_pandas=True)
    return pa.table(columns)


_ARROW_TYPES: Final = {"<f4": pa.float32(), "<f8": pa.float64()}


def _sample_rows(payload: c.Payload) -> int:
    if isinstance(payload, c.GpuSampled | c.PortSampled):
        return payload.rows
    return 0


sample_rows = _sample_rows  # ``event_log.rows`` of a payload


def payload_json(payload: c.Payload) -> str | None:
    """``event_log.payload`` of a payload: its JSON, or None for a sample batch (kept
    column-wise in its samples table instead)."""
    if isinstance(payload, c.GpuSampled | c.PortSampled):
        return None
    return _json.encode(payload).decode()


def event_log_table(events: Sequence[c.Envelope], landed_us: int) -> pa.Table:
    samples = (c.GpuSampled, c.PortSampled)
    return pa.table({
        "event_id": pa.array([e.id for e in events], pa.string()),
        "type": pa.array([e.type for e in events], pa.string()),
        "v": pa.array([e.v for e in events], pa.int32()),
        "ts": pa.array([e.time_us for e in events], TS),
        "source": pa.array([e.source for e in events], pa.string()),
        "key": pa.array([e.key for e in events], pa.string()),
        "rows": pa.array([_sample_rows(e.payload) for e in events], pa.int32()),
        "payload": pa.array([
            None if isinstance(e.payload, samples) else _json.encode(e.payload).decode()
            for e in events
        ], pa.string()),
        "landed_at": pa.array(np.full(len(events), landed_us, dtype=np.int64), TS),
    })


def rows_table(events: Sequence[c.Envelope], build: Callable[[c.Envelope], Row]) -> pa.Table:
    rows = [build(e) for e in events]
    columns = {key: [row[key] for row in rows] for key in rows[0]}
    arrays = {
        name: pa.array(values, TS) if name in ("ts", "start_ts", "end_ts") else pa.array(values)
        for name, values in columns.items()
    }
    return pa.table(arrays)


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
            "entity": p.entity, "start_ts": p.start_us, "end_ts": p.end_us,
            "affected": list(p.affected), "scenario": p.scenario, "detail": p.detail}


def _incident_row(e: c.Envelope) -> Row:
    p = e.payload
    assert isinstance(p, c.IncidentOpened)
    return {"event_id": e.id, "ts": e.time_us, "incident_id": p.incident_id,
            "start_ts": p.start_us, "end_ts": p.end_us, "category": p.category,
            "root_entity": p.root_entity, "confidence": p.confidence,
            "candidates": _json.encode(p.candidates).decode(), "evidence": list(p.evidence)}


def _recommendation_row(e: c.Envelope) -> Row:
    p = e.payload
    assert isinstance(p, c.RecommendationIssued)
    return {"event_id": e.id, "ts": e.time_us, "incident_id": p.incident_id, "target": p.target,
            "action": p.action, "reason": p.reason, "gpu_hours_saved": p.gpu_hours_saved,
            "after": p.after}


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


# Payload type -> (raw table, row builder) for the events that land one row each.
ROW_TABLES: Final[dict[type[c.Payload], tuple[str, Callable[[c.Envelope], Row]]]] = {
    c.XidReported: ("xid_raw", _xid_row),
    c.FaultInjected: ("truth_raw", _truth_row),
    c.IncidentOpened: ("incidents_raw", _incident_row),
    c.RecommendationIssued: ("recommendations_raw", _recommendation_row),
    **{t: ("host_events_raw", _host_row) for t in (
        c.NodeWentDown, c.NodeCameUp, c.NodeMaintenanceStarted, c.NodeMaintenanceEnded)},
    **{t: ("job_events_raw", _job_row) for t in c.PAYLOAD_TYPES.values() if t.TOPIC == "jobs"},
    **{t: ("inventory_raw", _inventory_row) for t in (
        c.RackRegistered, c.NodeRegistered, c.SwitchRegistered, c.LinkRegistered,
        c.GpuRegistered)},
}


def event_tables(events: Sequence[c.Envelope], landed_us: int) -> list[tuple[str, pa.Table]]:
    """(raw table, Arrow table) pairs for ``events``; ``event_log`` first."""
    if not events:
        return []
    by_type: dict[type[c.Payload], list[c.Envelope]] = {}
    for event in events:
        by_type.setdefault(type(event.payload), []).append(event)
    out: list[tuple[str, pa.Table]] = [("event_log", event_log_table(events, landed_us))]
    gpu = sample_table(by_type.pop(c.GpuSampled, []), c.GPU_SIGNALS, "nodes", "gpu_count",
                       "gpu", "u1", "node", "gpu")
    port = sample_table(by_type.pop(c.PortSampled, []), c.PORT_SIGNALS, "switches",
                        "port_count", "port", "<u2", "switch", "port")
    out += [(name, t) for name, t in (("gpu_samples_raw", gpu), ("port_samples_raw", port)) if t]
    grouped: dict[str, list[pa.Table]] = {}
    for payload_type, batch in by_type.items():
        if payload_type not in ROW_TABLES:  # kept in event_log only (e.g. action.*)
            continue
        table, build = ROW_TABLES[payload_type]
        grouped.setdefault(table, []).append(rows_table(batch, build))
    for table, parts in grouped.items():
        out.append((table, parts[0] if len(parts) == 1 else pa.concat_tables(
            parts, promote_options="permissive")))
    return out


def dead_letter_table(dead: Sequence[DeadLetter], received_us: int) -> pa.Table:
    return pa.table({
        "received_at": pa.array(np.full(len(dead), received_us, dtype=np.int64), TS),
        "origin": pa.array([d.origin for d in dead], pa.string()),
        "partition": pa.array([d.partition for d in dead], pa.int32()),
        "offset": pa.array([d.offset for d in dead], pa.int64()),
        "stage": pa.array([d.stage for d in dead], pa.string()),
        "error": pa.array([d.error for d in dead], pa.string()),
        "event_type": pa.array([d.event_type for d in dead], pa.string()),
        "event_id": pa.array([d.event_id for d in dead], pa.string()),
        "raw": pa.array([d.raw for d in dead], pa.binary()),
    })


def offsets_table(offsets: Mapping[tuple[str, int], int], updated_us: int) -> pa.Table:
    keys = sorted(offsets)
    return pa.table({
        "topic": pa.array([t for t, _ in keys], pa.string()),
        "partition": pa.array([p for _, p in keys], pa.int32()),
        "next_offset": pa.array([offsets[k] for k in keys], pa.int64()),
        "updated_at": pa.array(np.full(len(keys), updated_us, dtype=np.int64), TS),
    })
