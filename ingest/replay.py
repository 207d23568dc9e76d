"""Replays stored events: back to Kafka or into another store, in order, at a speed factor.

The store keeps every event: non-sample payloads verbatim (JSON, with their schema version) in
``event_log``, sample batches column-wise in ``gpu_samples_raw`` / ``port_samples_raw``. Replay
rebuilds the envelopes (same ids, so a target store deduplicates a second replay), streams them in
time windows to bound memory, and keeps each key's events in their original order: events are
sorted by event time, then by landing time, then by id. A time slice (``since``) starts with what
it needs from before: the inventory (racks, nodes, switches, links) and the placements of its
jobs; without them its analysis would miss the topology and blame jobs for their nodes' failures.

``replay`` feeds them to any callable (a ``Sink``'s ``write``, a list's ``extend``); ``replay_to``
writes them to the kernel's ``KafkaSink`` or ``StoreSink``, the same sinks every stage uses.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import duckdb
import numpy as np

from fleetlog.ingest import contract as c
from fleetlog.ingest.contract import Sink
from fleetlog.ingest.contract.errors import FleetlogError
from fleetlog.ingest.kafka.sink import KafkaSink
from fleetlog.ingest.store import decode_stored, open_union
from fleetlog.ingest.store.sink import StoreSink


class ReplayError(FleetlogError):
    """Replay could not run; the message says what to do."""


@dataclass
class ReplayStats:
    events: int = 0
    gpu_samples: int = 0
    port_samples: int = 0
    undecodable: int = 0  # stored rows that no longer decode (reported, never dropped silently)
    inventory: int = 0  # registrations and job placements from before --since, carried
    first_ts: datetime | None = None
    last_ts: datetime | None = None
    wall_s: float = 0.0


_SAMPLE_TYPES = {c.GpuSampled.TYPE, c.PortSampled.TYPE}


def _window_bounds(
    con: duckdb.DuckDBPyConnection, since: datetime | None, until: datetime | None,
) -> tuple[int, int] | None:
    row = con.execute(
        "SELECT epoch_us(min(ts)), epoch_us(max(ts)) FROM event_log "
        "WHERE ts >= coalesce(?::TIMESTAMPTZ, '-infinity') "
        "AND ts <= coalesce(?::TIMESTAMPTZ, 'infinity')",
        [since, until],
    ).fetchone()
    if row is None or row[0] is None:
        return None
    return int(row[0]), int(row[1])


def _samples(
    con: duckdb.DuckDBPyConnection, table: str, entity: str, index: str, index_dtype: str,
    signals: Sequence[c.Signal], lo: int, hi: int,
) -> dict[str, tuple[list[str], list[int], bytes, dict[str, bytes]]]:
    """event_id -> (entities, counts, index bytes, columns) for sample rows in [lo, hi)."""
    cols = ", ".join(s.column for s in signals)
    arrow: Any = con.sql(
        f"SELECT event_id, {entity}, {index}, {cols} FROM {table} "
        "WHERE ts >= make_timestamptz(?) AND ts < make_timestamptz(?) "
        f"ORDER BY event_id, {entity}, {index}",
        params=[lo, hi],
    ).to_arrow_table()
    out: dict[str, tuple[list[str], list[int], bytes, dict[str, bytes]]] = {}
    if arrow.num_rows == 0:
        return out
    ids = arrow.column("event_id").to_numpy(zero_copy_only=False)
    names = arrow.column(entity).to_numpy(zero_copy_only=False)
    idx = arrow.column(index).to_numpy(zero_copy_only=False).astype(index_dtype)
    values = {
        s.column: arrow.column(s.column).to_numpy(zero_copy_only=False).astype(s.dtype)
        for s in signals
    }
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    ends = np.r_[starts[1:], len(ids)]
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        group = names[start:end]
        change = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
        counts = np.diff(np.r_[change, len(group)]).tolist()
        out[str(ids[start])] = (
            [str(n) for n in group[change]], [int(n) for n in counts],
            idx[start:end].tobytes(),
            {col: arr[start:end].tobytes() for col, arr in values.items()},
        )
    return out


def stored_events(
    con: duckdb.DuckDBPyConnection, *, since: datetime | None = None,
    until: datetime | None = None, window_s: float = 3600.0, stats: ReplayStats | None = None,
) -> Iterator[c.Envelope]:
    """Every stored event in [since, until], rebuilt, in replay order."""
    stats = stats if stats is not None else ReplayStats()
    bounds = _window_bounds(con, since, until)
    if bounds is None:
        return
    if since is not None:
        yield from _inventory_before(con, since, until, stats)
    step = int(window_s * 1_000_000)
    lo, last = bounds
    while lo <= last:
        hi = min(lo + step, last + 1)
        rows = con.execute(
            "SELECT event_id, type, v, epoch_us(ts), source, key, payload FROM event_log "
            "WHERE ts >= make_timestamptz(?) AND ts < make_timestamptz(?) "
            "ORDER BY ts, landed_at, event_id",
            [lo, hi],
        ).fetchall()
        gpu = port = {}
        if any(r[1] == c.GpuSampled.TYPE for r in rows):
            gpu = _samples(con, "gpu_samples_raw", "node", "gpu", "u1", c.GPU_SIGNALS, lo, hi)
        if any(r[1] == c.PortSampled.TYPE for r in rows):
            port = _samples(con, "port_samples_raw", "switch", "port", "<u2", c.PORT_SIGNALS,
                            lo, hi)
        for event_id, kind, version, ts_us, source, key, payload in rows:
            event = _rebuild(event_id, kind, version, ts_us, source, key, payload, gpu, port)
            if event is None:
                stats.undecodable += 1
                continue
            yield event
        lo = hi


INVENTORY_TYPES: Final = (c.RackRegistered.TYPE, c.NodeRegistered.TYPE,
                          c.SwitchRegistered.TYPE, c.LinkRegistered.TYPE)
# What places a job: the slice's jobs were submitted and placed before it, usually.
JOB_CONTEXT_TYPES: Final = (c.JobSubmitted.TYPE, c.JobPlaced.TYPE, c.JobStarted.TYPE,
                            c.JobRestarted.TYPE, c.JobMigrated.TYPE)


def _inventory_before(
    con: duckdb.DuckDBPyConnection, since: datetime, until: datetime | None, stats: ReplayStats,
) -> Iterator[c.Envelope]:
    """What a slice needs from before it starts: the racks, nodes, switches and links were
    registered once, usually long before, and the jobs running in the slice were submitted and
    placed before it. Without them the analysis of the slice would not know the topology (no
    rack to group a power loss by, no NIC behind a port) nor which nodes a job ran on (its
    failure would look like its own bug). All registrations go first (a few per node; a
    superset of what the slice touches), then the submissions, placements, starts, restarts and
    migrations of the jobs with events in the slice, with their own times and ids, so a target
    store that has them already lands nothing new."""
    inventory = ", ".join("?" for _ in INVENTORY_TYPES)
    jobs = ", ".join("?" for _ in JOB_CONTEXT_TYPES)
    rows = con.execute(
        "SELECT event_id, type, v, epoch_us(ts), source, key, payload FROM event_log "
        f"WHERE ts < ?::TIMESTAMPTZ AND (type IN ({inventory}) OR (type IN ({jobs}) AND key IN ("
        "  SELECT DISTINCT key FROM event_log WHERE type LIKE 'job.%' AND ts >= ?::TIMESTAMPTZ "
        "  AND ts <= coalesce(?::TIMESTAMPTZ, 'infinity')))) "
        "ORDER BY ts, landed_at, event_id",
        [since, *INVENTORY_TYPES, *JOB_CONTEXT_TYPES, since, until],
    ).fetchall()
    for event_id, kind, version, ts_us, source, key, payload in rows:
        event = decode_stored(event_id, kind, version, ts_us, source, key, payload)
        if event is None:
            stats.undecodable += 1
            continue
        stats.inventory += 1
        yield event


def _rebuild(
    event_id: str, kind: str, version: int, ts_us: int, source: str, key: str,
    payload: str | None, gpu: dict[str, Any], port: dict[str, Any],
) -> c.Envelope | None:
    # Samples are stored column-wise, not as their message: rebuilt in the current shape.
    if kind == c.GpuSampled.TYPE:
        found = gpu.get(event_id)
        body: Any = c.gpu_payload(*found) if found else c.gpu_payload([], [], b"", {})
        return c.Envelope(id=event_id, type=kind, v=body.VERSION, time_us=ts_us, source=source,
                          key=key, payload=body)
    if kind == c.PortSampled.TYPE:
        found = port.get(event_id)
        body = c.port_payload(*found) if found else c.port_payload([], [], b"", {})
        return c.Envelope(id=event_id, type=kind, v=body.VERSION, time_us=ts_us, source=source,
                          key=key, payload=body)
    return decode_stored(event_id, kind, version, ts_us, source, key, payload)


def replay(
    paths: Sequence[str | Path],
    send: Callable[[list[c.Envelope]], None],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    speed: float = 0.0,
    batch: int = 2000,
    progress: Callable[[ReplayStats], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> ReplayStats:
    """Feed stored events to ``send`` in batches; ``speed`` > 0 keeps their relative timing
    (1 = real time, 60 = a simulated minute per second); 0 replays as fast as possible."""
    if since and until and since > until:
        raise ReplayError(f"--since {since.isoformat()} is after --until {until.isoformat()}")
    con = open_union(paths)
    stats = ReplayStats()
    started = clock()
    first_us: int | None = None
    pending: list[c.Envelope] = []
    try:
        for event in stored_events(con, since=since, until=until, stats=stats):
            if since is not None and event.time < since:  # the inventory the slice carries
                pending.append(event)
                stats.events += 1
                continue
            if first_us is None:
                first_us = event.time_us
                stats.first_ts = event.time
            if speed > 0:
                due = (event.time_us - first_us) / 1e6 / speed
                ahead = due - (clock() - started)
                if ahead > 0.005:
                    if pending:
                        send(pending)
                        pending = []
                    sleep(ahead)
            pending.append(event)
            stats.events += 1
            if isinstance(event.payload, c.GpuSampled):
                stats.gpu_samples += event.payload.rows
            elif isinstance(event.payload, c.PortSampled):
                stats.port_samples += event.payload.rows
            stats.last_ts = event.time
            if len(pending) >= batch:
                send(pending)
                pending = []
                if progress:
                    progress(stats)
        if pending:
            send(pending)
    finally:
        con.close()
    stats.wall_s = clock() - started
    if progress:
        progress(stats)
    return stats


def replay_to(
    paths: Sequence[str | Path], target: tuple[str, str], *, since: datetime | None = None,
    until: datetime | None = None, speed: float = 0.0, topic_prefix: str | None = None,
    progress: Callable[[ReplayStats], None] | None = None,
) -> ReplayStats:
    """Replay into ``("kafka", "host:port")`` or ``("duckdb", "path")``: the kernel's sinks
    (``KafkaSink``, ``StoreSink``), one transaction or one run of sends per replayed batch."""
    scheme, where = target
    sink: Sink
    if scheme == "duckdb":
        sources = {Path(p).resolve() for p in paths}
        if Path(where).resolve() in sources:
            raise ReplayError(f"cannot replay {where} into itself: choose another --to file")
        sink = StoreSink.open(where)
    elif scheme == "kafka":
        sink = KafkaSink(where, topic_prefix=topic_prefix)
    else:
        raise ReplayError(f"cannot replay to {scheme}: use kafka://HOST:PORT or duckdb:PATH")
    try:
        return replay(paths, sink.write, since=since, until=until, speed=speed,
                      progress=progress)
    finally:
        sink.close()
