"""Slurm sacct --parsable2 job records: states, steps, time zones, hostlists."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from readers_support import capture, query, run

from fleetlog.ingest import contract as c
from fleetlog.ingest.readers import sacct
from fleetlog.ingest.readers.base import ReadOptions, parse_tz
from fleetlog.ingest.readers.errors import MissingOption

MIDNIGHT = "slurm/sample-sacct-output-midnight-edge-case.txt"


def _parse(text: str, **opts: object) -> sacct.ReadResult:
    return sacct.parse(text.encode(), origin="sacct", opts=ReadOptions(**opts))  # type: ignore[arg-type]


def _capture_states(path: Path) -> Counter[str]:
    """Job-level records by state, straight from the capture (the test's oracle)."""
    lines = path.read_text().splitlines()[1:]
    return Counter(line.split("|")[1].split()[0] for line in lines
                   if line and "." not in line.split("|")[0])


def test_midnight_capture_rows_by_state(tmp_path: Path) -> None:
    path = capture(MIDNIGHT)
    states = _capture_states(path)
    assert states == {"FAILED": 259, "CANCELLED": 24, "COMPLETED": 18, "OUT_OF_MEMORY": 2,
                      "REQUEUED": 2, "TIMEOUT": 1}
    db = tmp_path / "f.duckdb"
    code, out, err = run("import", "--to", f"duckdb:{db}", "--tz", "UTC", path)
    assert code == 0, err
    assert out["dead_letters"] == 0
    assert out["files"][0]["skipped"] == {
        "job steps (only allocations are job events)": 1186 - sum(states.values())}
    failed = dict(query(db, "SELECT split_part(reason, ' ', 1), count(*) FROM job_events "
                            "WHERE type = 'job.failed' GROUP BY 1"))
    assert failed == {s: n for s, n in states.items()
                      if s not in ("COMPLETED", "REQUEUED", "CANCELLED")}
    by_type = dict(query(db, "SELECT type, count(*) FROM job_events GROUP BY 1"))
    assert by_type == {"job.started": sum(states.values()), "job.completed": 18,
                       "job.restarted": 2, "job.failed": 262, "job.cancelled": 24}
    reasons = {r for (r,) in query(db, "SELECT DISTINCT reason FROM job_events "
                                       "WHERE type = 'job.cancelled'")}
    assert reasons == {"CANCELLED by 1185300516", "CANCELLED by 1185200358"}


def test_first_record_times_and_the_cluster_zone(tmp_path: Path) -> None:
    # 39125549|CANCELLED by 1185300516|2021-04-05T02:07:20|2021-04-07T23:59:38
    path = capture(MIDNIGHT)
    for tz, offset_h in (("UTC", 0), ("America/Los_Angeles", 7)):
        result = sacct.read(path, ReadOptions(tz=parse_tz(tz)))
        events = [e for e in result.events if e.key == "job:39125549"]
        assert [e.type for e in events] == ["job.started", "job.cancelled"]
        assert events[0].time == datetime(2021, 4, 5, 2 + offset_h, 7, 20, tzinfo=UTC)
        assert events[1].time == datetime(2021, 4, 7, 23, 59, 38, tzinfo=UTC).replace(
            hour=(23 + offset_h) % 24, day=7 + (23 + offset_h) // 24)


def test_naive_times_are_never_guessed(tmp_path: Path) -> None:
    with pytest.raises(MissingOption, match="--tz"):
        sacct.read(capture(MIDNIGHT), ReadOptions())
    code, _, err = run("import", "--to", f"duckdb:{tmp_path / 'f.duckdb'}", capture(MIDNIGHT))
    assert code == 1 and err.startswith("Error: sacct times have no time zone: pass --tz")
    assert not (tmp_path / "f.duckdb").exists() or query(
        tmp_path / "f.duckdb", "SELECT count(*) FROM job_events") == [(0,)]


def test_full_record_with_submit_nodes_gpus_and_exit_codes() -> None:
    text = (
        "JobID|JobName|Partition|State|Submit|Start|End|ExitCode|NodeList|AllocTRES\n"
        "42|train|gpu|NODE_FAIL|2025-01-01T00:00:00|2025-01-01T00:05:00|2025-01-01T03:00:00|"
        "0:9|gpu-node-[01-02,07]|billing=1,cpu=64,gres/gpu=24,node=3\n"
        "42.batch|batch||CANCELLED|2025-01-01T00:00:00|2025-01-01T00:05:00|2025-01-01T03:00:00"
        "|0:9|gpu-node-01|cpu=1\n"
        "43|eval|gpu|COMPLETED|2025-01-01T00:00:00|2025-01-01T00:01:00|2025-01-01T00:02:00|0:0|"
        "n9|gres/gpu:h100=8\n"
        "44|wait|gpu|PENDING|2025-01-01T00:00:00|Unknown|Unknown|0:0|None assigned|\n"
        "45|run|gpu|RUNNING|2025-01-01T00:00:00|2025-01-01T00:01:00|Unknown|0:0|n1|\n"
        "46|oom|gpu|OUT_OF_MEMORY|2025-01-01T00:00:00|2025-01-01T00:01:00|2025-01-01T00:09:00|"
        "0:125|n2|\n"
    )
    result = _parse(text, tz=UTC)
    assert not result.dead
    by_job: dict[str, list[c.Envelope]] = {}
    for event in result.events:
        by_job.setdefault(event.key, []).append(event)
    assert [e.type for e in by_job["job:42"]] == [
        "job.submitted", "job.started", "job.placed", "job.failed"]
    submitted, _, placed, failed = (e.payload for e in by_job["job:42"])
    assert isinstance(submitted, c.JobSubmitted) and submitted.gpus == 24
    assert submitted.vcluster == "gpu"
    assert isinstance(placed, c.JobPlaced)
    assert placed.nodes == ["gpu-node-01", "gpu-node-02", "gpu-node-07"]
    assert isinstance(failed, c.JobFailed)
    assert (failed.reason, failed.exit_code) == ("NODE_FAIL", 137)  # killed by signal 9
    assert by_job["job:43"][0].payload.gpus == 8  # type: ignore[attr-defined]
    assert [e.type for e in by_job["job:44"]] == ["job.submitted"]
    assert [e.type for e in by_job["job:45"]] == ["job.submitted", "job.started", "job.placed"]
    assert by_job["job:46"][-1].payload.exit_code == 125  # type: ignore[attr-defined]
    assert result.skipped == {"job steps (only allocations are job events)": 1}


def test_parsable_trailing_pipe_epoch_times_and_offsets() -> None:
    text = ("JobID|State|Start|End|\n"
            "7|TIMEOUT|1735689600|1735693200|\n"
            "8|COMPLETED|2025-01-01T00:00:00+02:00|2025-01-01T01:00:00+02:00|\n")
    result = _parse(text)  # no --tz needed: epoch seconds and explicit offsets
    assert not result.dead
    times = {(e.key, e.type): e.time for e in result.events}
    assert times[("job:7", "job.failed")] == datetime(2025, 1, 1, 1, tzinfo=UTC)
    assert times[("job:8", "job.started")] == datetime(2024, 12, 31, 22, tzinfo=UTC)


def test_noheader_needs_fields() -> None:
    body = "9|FAILED|2025-01-01T00:00:00|2025-01-01T00:01:00\n"
    with pytest.raises(MissingOption, match="--fields"):
        _parse(body, tz=UTC)
    result = _parse(body, tz=UTC, fields=("JobID", "State", "Start", "End"))
    assert [e.type for e in result.events] == ["job.started", "job.failed"]


def test_dst_ambiguous_is_counted_and_nonexistent_is_a_dead_letter() -> None:
    text = ("JobID|State|Start|End\n"
            "1|COMPLETED|2024-11-03T01:30:00|2024-11-03T03:00:00\n"   # 01:30 happens twice
            "2|COMPLETED|2024-03-10T02:30:00|2024-03-10T04:00:00\n")  # 02:30 never happens
    result = _parse(text, tz=parse_tz("America/New_York"))
    assert result.skipped["ambiguous local times (first occurrence taken)"] == 1
    started = next(e for e in result.events if e.key == "job:1")
    assert started.time == datetime(2024, 11, 3, 5, 30, tzinfo=UTC)  # EDT, the first 01:30
    assert [d.offset for d in result.dead] == [3]
    assert "does not exist" in result.dead[0].error


def test_bad_records_are_dead_letters() -> None:
    text = ("JobID|State|Start|End|NodeList|ExitCode\n"
            "1|EXPLODED|2025-01-01T00:00:00|2025-01-01T00:01:00|n1|0:0\n"
            "2|FAILED|yesterday|2025-01-01T00:01:00|n1|0:0\n"
            "3|FAILED|2025-01-01T00:00:00|2025-01-01T00:01:00|n[1-|0:0\n"
            "4|FAILED|2025-01-01T00:00:00\n"
            "5|FAILED|2025-01-01T00:00:00|2025-01-01T00:01:00|n1|x:y\n"
            "|FAILED|2025-01-01T00:00:00|2025-01-01T00:01:00|n1|0:0\n")
    result = _parse(text, tz=UTC)
    assert not result.events
    assert [d.offset for d in result.dead] == [2, 3, 4, 5, 6, 7]
    assert "unknown job state" in result.dead[0].error


@pytest.mark.parametrize(("hostlist", "expected"), [
    ("node[1281-1283,1301]", ["node1281", "node1282", "node1283", "node1301"]),
    ("gpu-[01-02]-ib[0-1]", ["gpu-01-ib0", "gpu-01-ib1", "gpu-02-ib0", "gpu-02-ib1"]),
    ("a1,b[2-3],c", ["a1", "b2", "b3", "c"]),
    ("None assigned", []),
])
def test_hostlist_expansion(hostlist: str, expected: list[str]) -> None:
    assert sacct.expand_hostlist(hostlist) == expected
