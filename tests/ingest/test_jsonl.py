"""``fleetlog ingest --from jsonl:DIR``: the same writer, dead letters with file and line."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner
from ingest_support import job_event, rack_event

from fleetlog.cli.main import cli
from fleetlog.ingest import contract as c
from fleetlog.ingest.errors import SourceMissing
from fleetlog.ingest.jsonl import ingest_jsonl


def _write(folder: Path) -> None:
    folder.mkdir()
    gpu = [c.encode_json(rack_event(i)) for i in range(10)]
    gpu.insert(3, b"{not json")
    (folder / "gpu.jsonl").write_bytes(b"\n".join(gpu) + b"\n")
    jobs = [c.encode_json(job_event(i)) for i in range(5)] + [c.encode_json(job_event(0))]
    (folder / "jobs.jsonl").write_bytes(b"\n".join(jobs) + b"\n\n")


def test_lands_files_and_keeps_bad_lines_as_dead_letters(tmp_path: Path, db_path: Path):
    _write(tmp_path / "out")
    stats = ingest_jsonl(tmp_path / "out", db_path, batch_events=4)
    assert (stats.events, stats.duplicates, stats.dead_letters) == (15, 1, 1)
    assert stats.gpu_samples == 320
    con = duckdb.connect(str(db_path), read_only=True)
    origin, line, partition = con.execute(
        'SELECT origin, "offset", partition FROM dead_letters').fetchone()  # type: ignore[misc]
    con.close()
    assert (Path(origin).name, line, partition) == ("gpu.jsonl", 4, None)
    again = ingest_jsonl(tmp_path / "out", db_path)
    assert (again.events, again.dead_letters, again.duplicates) == (0, 0, 0)


def test_appended_lines_are_picked_up(tmp_path: Path, db_path: Path):
    _write(tmp_path / "out")
    ingest_jsonl(tmp_path / "out", db_path)
    with (tmp_path / "out" / "gpu.jsonl").open("ab") as handle:
        handle.write(c.encode_json(rack_event(99)) + b"\n")
    assert ingest_jsonl(tmp_path / "out", db_path).events == 1


def test_a_missing_folder_says_what_to_do(tmp_path: Path, db_path: Path):
    with pytest.raises(SourceMissing, match="simulate --to jsonl"):
        ingest_jsonl(tmp_path / "nope", db_path)
    result = CliRunner().invoke(cli, ["ingest", "--from", f"jsonl:{tmp_path}/nope", "--db",
                                      str(db_path)])
    assert result.exit_code == 1
    assert result.output.startswith("Error: no folder") and len(result.output.splitlines()) == 1


def test_an_id_reused_with_other_content_is_a_conflict_with_its_file_and_line(
        tmp_path: Path, db_path: Path):
    folder = tmp_path / "out"
    folder.mkdir()
    first = job_event(1)
    reused = c.make_event(c.JobStepReported(job="j1", step=99, step_time_s=9.0, tokens_per_s=1.0),
                          time_us=first.time_us, source="test", id=first.id)
    lines = [c.encode_json(job_event(0)), c.encode_json(first), c.encode_json(reused)]
    (folder / "jobs.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    stats = ingest_jsonl(folder, db_path)
    assert stats.events == 2
    con = duckdb.connect(str(db_path), read_only=True)
    rows = con.execute('SELECT origin, "offset", stage FROM dead_letters').fetchall()
    con.close()
    assert [(Path(o).name, line, stage) for o, line, stage in rows] == [
        ("jobs.jsonl", 3, "conflict")]
