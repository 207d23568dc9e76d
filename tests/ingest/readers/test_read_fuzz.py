"""Every reader, fed mutated real captures: never a traceback, never an event the store refuses.

Mutations start from the real bytes (so the reader goes deep into its happy path before meeting
the damage): byte flips, deleted / duplicated / truncated lines, and tokens real deployments
produce (N/A, NaN, DCGM sentinels, huge numbers, stray separators). A reader may stop with a
``ReaderError`` (a one-line "pass --fields" when the header was cut off); anything else fails.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from readers_support import DATA, FIXTURES

from fleetlog.ingest import contract as c
from fleetlog.ingest.readers import (
    jsonl,
    kmsg,
    nvidia_smi_csv,
    nvidia_smi_xml,
    perfquery,
    prometheus,
    sacct,
    sysfs_ib,
)
from fleetlog.ingest.readers.base import ReadOptions, ReadResult
from fleetlog.ingest.readers.errors import ReaderError
from fleetlog.ingest.store import ensure_schema
from fleetlog.ingest.store.writer import StoreWriter

OPTS = ReadOptions(node="fuzz-node", tz=UTC, boot_time=datetime(2025, 1, 1, tzinfo=UTC),
                   year=2025, time=datetime(2025, 1, 1, tzinfo=UTC))
TOKENS = [b"NaN", b"[N/A]", b"N/A", b"9223372036854775794", b"2147483632", b"1e400", b"-1",
          b"99999999999999999999999", b"\x00", b"{", b"}", b"|", b":", b",", b"\t", b"\\x0a",
          b"Xid (", b"): ", b"0x", b"\xff\xfe", b"<gpu>", b"</gpu>", b"&amp;", b"\"", b"  ",
          b"gpu=\"999\"", b"port=\"70000\"", b"Unknown", b"2025-13-45T99:99:99", b"[", b"]",
          b"1e300"]


def _t4_metrics() -> bytes:
    return (FIXTURES / "dcgm" / "datadog__dcgm-exporter-tesla-t4.metrics").read_bytes()


def _capture(relative: str, max_lines: int = 80) -> Callable[[], bytes]:
    def load() -> bytes:
        path = DATA / relative
        if not path.exists():
            pytest.skip(f"real capture {relative} not found under {DATA}")
        return b"\n".join(path.read_bytes().splitlines()[:max_lines]) + b"\n"
    return load


def _jsonl_seed() -> bytes:
    events = [
        c.make_event(c.XidReported(node="n", xid=79, pid=3), time_us=1, source="s"),
        c.make_event(c.gpu_batch(["n"], [2], [0, 1], {"gpu_temp_c": [1.0, 2.0]}), time_us=2,
                     source="s"),
        c.make_event(c.JobFailed(job="j", step=1, exit_code=1, reason="x"), time_us=3,
                     source="s"),
    ]
    return b"\n".join(c.encode_json(e) for e in events) + b"\n"


Parse = Callable[[bytes], ReadResult]
READERS: dict[str, tuple[Callable[[], bytes], Parse]] = {
    "dcgm": (_t4_metrics, lambda d: prometheus.parse(d, origin="f", opts=OPTS,
                                                     default_time_us=0)),
    "nvidia_gpu_exporter": (_capture("nvidia_smi/nvidia_gpu_exporter__h100__load.metrics", 400),
                            lambda d: prometheus.parse(d, origin="f", opts=OPTS,
                                                       default_time_us=0)),
    "nvidia-smi-csv": (_capture("nvidia_smi/extracted/h100__query-gpu.load.csv"),
                       lambda d: nvidia_smi_csv.parse(d, origin="f", opts=OPTS,
                                                      default_time_us=0)),
    "nvidia-smi-xml": (_capture("nvidia_smi/telegraf__nvidia-smi-q-x__tesla-t4.xml", 1000),
                       lambda d: nvidia_smi_xml.parse(d, origin="f", opts=OPTS)),
    "kmsg-T": (_capture("xid/gpud__dmesg-with-xid-119.log"),
               lambda d: kmsg.parse(d, origin="f", opts=OPTS)),
    "kmsg-iso": (_capture("xid/gpud__memory__dmesg.decode.iso.log"),
                 lambda d: kmsg.parse(d, origin="f", opts=OPTS)),
    "sacct": (_capture("slurm/sample-sacct-output-midnight-edge-case.txt", 60),
              lambda d: sacct.parse(d, origin="f", opts=OPTS)),
    "perfquery": (_capture("network/infiniband_exporter/perfquery__0x7cfe9003009ce5b0.out"),
                  lambda d: perfquery.parse(d, origin="f", opts=OPTS, default_time_us=0)),
    "sysfs-ttar": (_capture("network/node_exporter__sys.ttar__class_infiniband.ttar", 400),
                   lambda d: _sysfs_text(d)),
    "jsonl": (_jsonl_seed, lambda d: jsonl.parse(d, origin="f")),
}


def _sysfs_text(data: bytes) -> ReadResult:
    out = sysfs_ib.Collector("f", "sysfs-ib", "sysfs-ib")
    table = sysfs_ib.SampleTable()
    for name, line, value, raw in sysfs_ib._text(data, out):
        sysfs_ib._apply(table, "fuzz-node", name, line, value, raw, out, "f")
    out.emit_ports(table, 0)
    return out.result


@st.composite
def mutated(draw: st.DrawFn, seed: bytes) -> bytes:
    lines = seed.split(b"\n")
    for _ in range(draw(st.integers(1, 6))):
        if not lines:
            lines.append(b"")
        op = draw(st.sampled_from(["flip", "token", "delete", "dup", "truncate", "insert"]))
        i = draw(st.integers(0, len(lines) - 1))
        line = lines[i]
        if op == "flip" and line:
            j = draw(st.integers(0, len(line) - 1))
            lines[i] = line[:j] + draw(st.binary(min_size=1, max_size=3)) + line[j + 1:]
        elif op == "token":
            j = draw(st.integers(0, len(line)))
            cut = draw(st.integers(0, 4))
            lines[i] = line[:j] + draw(st.sampled_from(TOKENS)) + line[j + cut:]
        elif op == "delete":
            del lines[i]
        elif op == "dup":
            lines.insert(i, line)
        elif op == "truncate":
            lines[i] = line[: draw(st.integers(0, len(line)))]
        else:
            lines.insert(i, draw(st.binary(max_size=40)))
    return b"\n".join(lines)


@pytest.fixture(scope="module")
def writer() -> Iterator[StoreWriter]:
    """An in-memory store (same schema and writer; no fsync per example)."""
    con = duckdb.connect(":memory:")
    ensure_schema(con)
    store = StoreWriter(con)
    try:
        yield store
    finally:
        store.close()


def _check(result: ReadResult, data: bytes, writer: StoreWriter) -> None:
    lines = data.count(b"\n") + 1
    for letter in result.dead:
        assert letter.origin.startswith("f") and letter.error
        assert letter.offset is None or 1 <= letter.offset <= lines, letter
    for event in result.events:
        assert c.decode(c.encode(event)) == event  # valid under the contract's own codec
    landed = writer.write_batch(result.events, result.dead)
    refused = landed.dead_letters - len(result.dead)
    assert refused == 0, "the store refused an event a reader produced"


@pytest.mark.parametrize("name", list(READERS))
def test_mutated_captures_never_crash_a_reader(name: str, writer: StoreWriter) -> None:
    load, parse = READERS[name]
    seed = load()
    baseline = parse(seed)
    assert baseline.events, f"the unmutated {name} seed should read"

    @settings(max_examples=100, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.function_scoped_fixture])
    @given(mutated(seed))
    def run(data: bytes) -> None:
        try:
            result = parse(data)
        except ReaderError as exc:
            assert str(exc) and "\n" not in str(exc)
            return
        _check(result, data, writer)

    run()


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.binary(max_size=300))
def test_random_bytes_never_crash_any_reader(data: bytes) -> None:
    for name in ("dcgm", "nvidia-smi-xml", "kmsg-T", "jsonl"):
        with contextlib.suppress(ReaderError):
            READERS[name][1](data)


def test_detection_never_crashes(tmp_path: Path) -> None:
    from fleetlog.ingest.readers.registry import detect_format

    for i, blob in enumerate([b"", b"\x00\xff" * 100, b"{", b"<?xml", b"# HELP", b"|" * 50]):
        path = tmp_path / f"f{i}"
        path.write_bytes(blob)
        with contextlib.suppress(ReaderError):
            detect_format(path)
