"""What every detector gets: the store, the time window, the sampling interval, the projections,
and the ``Finding`` type they return.

A finding is one anomaly on one entity: what rule fired (``kind``), when the first symptom of it
was seen (``onset_us``), when the rule could first have fired on the data seen so far
(``detect_us`` — detection is causal: it never uses later samples), until when it lasted, and the
ids of the events that show it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import duckdb
import polars as pl

from fleetlog.analysis.events import fold_store
from fleetlog.analysis.projections import Projections

US: int = 1_000_000
T = TypeVar("T")
# DuckDB's memory cap on the connections the analysis reads through (analyze, eval). Its own
# default is 80 % of the machine's RAM, and its buffer pool keeps every block it read in there:
# on a 2,048-node day that was 10-12 GB of resident memory for ~1.5 GB of hash tables. Capped,
# it evicts blocks it has done with (and spills a hash table that outgrows the cap): 7.6 GB peak
# for the whole process (the rest is the detectors' frames), and no slower (docs/scale.md).
ANALYSIS_MEMORY_LIMIT: Final = "3GB"


@dataclass(frozen=True)
class Finding:
    kind: str  # e.g. "xid", "sbe_rising", "node_silent", "link_flap", "job_failed"
    entity: str  # contract entity name: gpu:n00001/3, node:n00001, link:leaf/4, job:j1 ...
    onset_us: int
    detect_us: int
    end_us: int
    text: str  # one line a person on call can read
    evidence: tuple[str, ...] = ()  # event ids
    attrs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def node(self) -> str | None:
        """The node this finding sits on, for gpu/node/nic entities."""
        kind, _, rest = self.entity.partition(":")
        if kind in ("gpu", "nic"):
            return rest.split("/", 1)[0]
        if kind == "node":
            return rest
        value = self.attrs.get("node")
        return str(value) if value else None


@dataclass
class AnalysisContext:
    con: duckdb.DuckDBPyConnection
    since_us: int  # findings detected before this are dropped
    until_us: int  # data at or after this is not read
    interval_us: int  # the sample interval (inferred from the data)
    lookback_us: int  # how far before ``since_us`` detectors read for baselines and precursors
    projections: Projections
    cache: dict[str, Any] = field(default_factory=dict)  # shared scans (e.g. the GPU summary)

    def shared(self, key: str, build: Callable[[], T]) -> T:
        """``build()``, computed once per analysis and kept under ``key``: the scans several
        detectors read (the GPU and port buckets, the scrape times, the job events)."""
        if key not in self.cache:
            self.cache[key] = build()
        value: T = self.cache[key]
        return value

    @property
    def read_from_us(self) -> int:
        return self.since_us - self.lookback_us

    def ts_filter(self, column: str = "ts") -> str:
        """SQL predicate on ``column`` for the data detectors may read (zone maps prune it)."""
        return (f"{column} >= make_timestamptz({self.read_from_us}) AND "
                f"{column} < make_timestamptz({self.until_us})")


def data_bounds(con: duckdb.DuckDBPyConnection) -> tuple[int, int] | None:
    """First and last event time in the store (microseconds), or None when it is empty."""
    row = con.execute("SELECT epoch_us(min(ts)), epoch_us(max(ts)) FROM event_log").fetchone()
    if row is None or row[0] is None:
        return None
    return int(row[0]), int(row[1])


def infer_interval_us(con: duckdb.DuckDBPyConnection, since_us: int, until_us: int) -> int:
    """The GPU scrape interval: the most common gap between consecutive scrape times."""
    row = con.execute(
        "SELECT mode(d) FROM (SELECT t - lag(t) OVER (ORDER BY t) AS d FROM ("
        "SELECT DISTINCT epoch_us(ts) AS t FROM gpu_samples WHERE ts >= make_timestamptz(?) "
        "AND ts < make_timestamptz(?) ORDER BY t LIMIT 2000)) WHERE d > 0",
        [since_us, min(until_us, since_us + 6 * 3600 * US)],
    ).fetchone()
    if row is None or row[0] is None:
        return 10 * US
    return int(row[0])


def build_context(
    con: duckdb.DuckDBPyConnection, since_us: int | None = None, until_us: int | None = None,
    *, lookback_s: float = 2 * 3600,
) -> AnalysisContext | None:
    """A context over ``[since, until)`` (default: all data), or None when the store is empty."""
    bounds = data_bounds(con)
    if bounds is None:
        return None
    since = bounds[0] if since_us is None else since_us
    until = bounds[1] + 1 if until_us is None else until_us
    interval = infer_interval_us(con, max(since - int(lookback_s * US), bounds[0]), until)
    projections = fold_store(con, until_us=until)
    return AnalysisContext(
        con=con, since_us=since, until_us=until, interval_us=interval,
        lookback_us=int(lookback_s * US), projections=projections,
    )


def query_pl(
    con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None
) -> pl.DataFrame:
    """Run ``sql`` and return a polars frame (through Arrow, no per-row Python objects)."""
    relation = con.sql(sql, params=params) if params else con.sql(sql)
    frame: pl.DataFrame = relation.pl()
    return frame
