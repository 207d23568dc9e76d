"""Contract events -> Arrow tables, one per raw store table, column-wise and without per-row SQL.

``event_tables`` groups a batch of events by payload type and builds the Arrow table of each raw
table they land in (``event_log`` always). Sample batches become one buffer per column: the
per-event column bytes are joined in C and viewed once by numpy, so the cost per event is a few
attribute reads, never one numpy call per event and signal. NaN becomes NULL ("not reported" is
not zero). Everything here is pure: no DuckDB, so it runs (and is tested) without a store.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import msgspec
import numpy as np
import pyarrow as pa

from ingest import contract as c

if TYPE_CHECKING:
    from ingest.writer import DeadLetter

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
    """One Arrow table for all sample rows of ``events`` (each column is ONE buffer)."""
    if not events:
        return None
    payloads = [e.payload for e in events]
    index_bytes: list[bytes] = [getattr(p, index_field) for p in payloads]
    width = np.dtype(index_dtype).itemsize
    rows_per_event = np.fromiter((len(b) for b in index_bytes), np.int64, len(events)) // width
    total = int(rows_per_event.sum())
    if total == 0:
        return None
    names: list[str] = []
    counts: list[int] = []
    for p in payloads:
        names.extend(getattr(p, entity_field))
        counts.extend(getattr(p, count_field))
    columns: dict[str, pa.Array] = {
        "event_id": _dict_array([e.id for e in events], rows_per_event),
        "ts": pa.array(
            np.repeat(np.fromiter((e.time_us for e in events), np.int64, len(events)),
                      rows_per_event),
            TS,
        ),
        entity_col: _dict_array(names, np.asarray(counts, dtype=np.int64)),
        index_col: pa.array(np.frombuffer(b"".join(index_bytes), dtype=index_dtype)),
    }
    maps: list[dict[str, bytes]] = [getattr(p, "columns") for p in payloads]  # noqa: B009
    names_in_order = [s.column for s in signals]
    try:  # the common case, every signal reported: one C-level pass over the events per signal
        by_signal: list[list[bytes | None]] = [
            list(map(operator.itemgetter(name), maps)) for name in names_in_order]
    except KeyError:
        by_signal = [[m.get(name) for m in maps] for name in names_in_order]
    for signal, found in zip(signals, by_signal, strict=True):
        name = signal.column
        parts = found
        if None in parts:  # a source that does not report this signal: NaN rows, hence NULL
            parts = [
                part if part is not None
                else np.full(int(rows), np.nan, dtype=signal.dtype).tobytes()
                for part, rows in zip(parts, rows_per_event, strict=True)
            ]
        values = np.frombuffer(b"".join(parts), dtype=signal.dtype)  # type: ignore[arg-type]
        # from_pandas=True turns NaN into NULL: "not reported" stays distinct from zero.
        columns[name] = pa.array(values, from_pandas=True)
    return pa.table(columns)


def _sample_rows(payload: c.Payload) -> int:
    if isinstance(payload, c.GpuSampled | c.PortSampled):
        return payload.rows
    return 0


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
        c.RackRegistered, c.NodeRegistered, c.SwitchRegistered, c.LinkRegistered)},
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
