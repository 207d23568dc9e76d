"""The ingester's DuckDB buffer pool is capped, so its memory does not grow with its file."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pytest
from click.testing import CliRunner
from ingest_support import rack_event

from fleetlog.cli.main import cli
from fleetlog.ingest.pipeline import malloc_in_use_bytes
from fleetlog.ingest.store import StoreError
from fleetlog.ingest.store.database import open_store_waiting
from fleetlog.ingest.store.writer import SHED_TARGET, StoreWriter


def _buffer_pool_mb(writer: StoreWriter) -> float:
    row = writer.con.execute("SELECT sum(memory_usage_bytes) FROM duckdb_memory()").fetchone()
    return (row[0] if row else 0) / 2**20


def test_the_buffer_pool_stays_under_the_cap_while_the_file_grows(tmp_path: Path):
    db = tmp_path / "fleet.duckdb"
    writer = StoreWriter(open_store_waiting(db, memory_limit="16MB"))
    rng = np.random.default_rng(0)
    pool = []
    try:
        for batch in range(6):  # random values barely compress: ~10 MB of file per batch
            events = [rack_event(batch * 3840 + i, rng) for i in range(3840)]
            writer.write_batch(events)
            pool.append(_buffer_pool_mb(writer))
    finally:
        writer.close()
    assert db.stat().st_size > 40 * 2**20  # the file outgrew the cap...
    assert max(pool) <= 16  # ...and DuckDB kept no more than the cap in memory


def test_a_size_that_is_not_a_size_is_refused(tmp_path: Path):
    with pytest.raises(StoreError, match="not a size"):
        open_store_waiting(tmp_path / "x.duckdb", memory_limit="lots")
    result = CliRunner().invoke(cli, ["ingest", "--from", f"jsonl:{tmp_path}", "--db",
                                      str(tmp_path / "x.duckdb"), "--memory-limit", "lots"])
    assert result.exit_code == 2
    assert "is not a size like 512MB" in result.output


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cycle collector frees it


def test_cyclic_garbage_is_collected_on_the_clock_while_the_threshold_is_raised():
    import gc
    import weakref

    from fleetlog.ingest.pipeline import YoungGarbage, fewer_gc_passes

    now = [1000.0]  # a clock the test moves: no real second has to pass, and none may
    before = gc.get_threshold()
    with fewer_gc_passes(clock=lambda: now[0]) as garbage:
        assert gc.get_threshold()[0] == 100_000
        assert isinstance(garbage, YoungGarbage)
        gc.collect()  # generation 0 starts empty: no pass of its own before the clock's
        node = _Node()
        alive = weakref.ref(node)
        del node
        now[0] += 0.999
        garbage.tick()  # the second is not up: nothing collected yet
        assert alive() is not None
        now[0] += 0.001  # now it is
        garbage.tick()
        assert alive() is None
    assert gc.get_threshold() == before


def test_the_writer_sheds_the_blocks_duckdb_cached_and_keeps_its_limit(tmp_path: Path):
    writer = StoreWriter(open_store_waiting(tmp_path / "fleet.duckdb", memory_limit="512MB"),
                         shed_every_s=3600)
    rng = np.random.default_rng(1)
    limit = "SELECT current_setting('memory_limit')"
    try:
        before = writer.con.execute(limit).fetchone()
        for batch in range(3):
            writer.write_batch([rack_event(batch * 3840 + i, rng) for i in range(3840)])
        cached = _buffer_pool_mb(writer)
        writer.shed_cache()
        assert _buffer_pool_mb(writer) < cached / 2
        once = writer.con.execute(limit).fetchone()
        writer.shed_cache()  # the limit is restored to the same value every time
        assert writer.con.execute(limit).fetchone() == once
        assert once is not None and before is not None
        assert abs(float(once[0].split()[0]) - float(before[0].split()[0])) <= 0.1  # MiB
    finally:
        writer.close()


def _malloc_in_use() -> int:
    in_use = malloc_in_use_bytes()
    if in_use is None:
        pytest.skip("needs glibc's mallinfo2")
    return in_use


@pytest.mark.slow
def test_shedding_drains_what_many_small_commits_leave_in_duckdbs_eviction_queues(
        tmp_path: Path):
    # Each small batch leaves dead entries in DuckDB's eviction queues that keep their block
    # handles allocated until a queue reaches 32,768 entries. The shed walks every queue, so
    # it hands that memory back: ~1 MB after 300 batches (a shed that stops once the limit is
    # met, as a 16MB target did, handed back ~2 KB).
    writer = StoreWriter(open_store_waiting(tmp_path / "fleet.duckdb", memory_limit="512MB"),
                         shed_every_s=3600)
    rng = np.random.default_rng(2)
    try:
        for batch in range(300):
            writer.write_batch([rack_event(batch * 10 + i, rng) for i in range(10)])
        before = _malloc_in_use()
        writer.shed_cache()
        freed = before - _malloc_in_use()
    finally:
        writer.close()
    assert freed > 512 * 1024


def test_shedding_right_after_a_checkpoint_leaves_the_limit_and_the_writer_working(
        tmp_path: Path):
    # After a checkpoint the writer holds nothing DuckDB cannot evict, so DuckDB accepts the
    # shed's limit instead of refusing it; the limit must still come back and writing go on.
    writer = StoreWriter(open_store_waiting(tmp_path / "fleet.duckdb", memory_limit="512MB"),
                         shed_every_s=3600)
    rng = np.random.default_rng(3)
    limit = writer.con.execute("SELECT current_setting('memory_limit')").fetchone()
    try:
        writer.write_batch([rack_event(i, rng) for i in range(10)])
        writer.con.execute("CHECKPOINT")
        writer.shed_cache()
        assert writer.con.execute("SELECT current_setting('memory_limit')").fetchone() == limit
        assert writer.write_batch([rack_event(10 + i, rng) for i in range(10)]).events == 10
    finally:
        writer.close()


class _RefusesToRaiseTheLimit:
    """A store connection whose memory limit, once lowered, cannot be raised again."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    def execute(self, sql: str, *args: object) -> duckdb.DuckDBPyConnection:
        if sql.startswith("SET memory_limit") and SHED_TARGET not in sql:
            raise duckdb.OutOfMemoryException(
                "Out of Memory Error: failed to allocate data of size 2.0 KiB (0 bytes/0 bytes "
                "used)\n\nPossible solutions: ...")
        return self.con.execute(sql, *args)


def test_a_limit_that_cannot_be_restored_stops_the_writer_with_what_to_do(tmp_path: Path):
    con = open_store_waiting(tmp_path / "fleet.duckdb", memory_limit="512MB")
    writer = StoreWriter(con, shed_every_s=3600)
    writer.con = _RefusesToRaiseTheLimit(con)  # type: ignore[assignment]
    try:
        with pytest.raises(StoreError) as refused:
            writer.shed_cache()
    finally:
        con.close()
    message = str(refused.value)
    assert "\n" not in message
    assert "could not restore DuckDB's memory limit" in message
    assert "run the ingester again" in message
