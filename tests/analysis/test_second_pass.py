"""The second passes read only the stretches their first pass flagged (scans.flagged_windows)
and find exactly what a read of each candidate's whole window finds; a port counter missing
from a few scrapes is no rise (it used to read as one: a missing value was taken as zero)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest
from fleet_builders import T0, Cluster, job

from fleetlog.analysis.context import US, AnalysisContext, Finding, build_context, query_pl
from fleetlog.analysis.detectors import network, peers, port_rates, scans
from fleetlog.ingest.store import open_store
from fleetlog.ingest.store.writer import land

SCRAPES = 1200  # 3 h 20 min at 10 s: longer than any stretch a second pass reads


def _cluster() -> Cluster:
    """A GPU drawing 20 % less power late in the run; one low only for a few minutes early; a
    PCIe replay trickle; a port whose symbol errors rise; one that goes down for a while; one
    at half the data rate of its node's other rails late in the run; one whose symbol-error
    counter (flat at 40) is missing from three scrapes, and that goes down
    for half a minute (so its series is read)."""
    cluster = Cluster(scrapes=SCRAPES, gpus=8, traffic=True)
    job(cluster, "j1", list(range(8)))
    noise = np.random.default_rng(5).normal(0.0, 0.03, (SCRAPES, 8, 8))
    replay_at = np.arange(600, 900, 25)

    def gpu(s: int, n: str, g: int, v: dict[str, float]) -> bool:
        node = int(n[1:]) - 1
        v["power_w"] *= 1.0 + float(noise[s, node, g])
        if n == "n00003" and g == 6 and s >= 1000:
            v["power_w"] *= 0.8
        if n == "n00005" and g == 2 and 100 <= s < 124:
            v["power_w"] *= 0.85
        if n == "n00002" and g == 3:
            v["pcie_replays"] = float(np.searchsorted(replay_at, s, side="right"))
        return True

    def port(s: int, switch: str, p: int, v: dict[str, float]) -> None:
        if switch == "leaf-su01-1" and p == 2 and s >= 300:
            v["symbol_error"] = float(3 * ((min(s, 420) - 300) // 20))
        if switch == "leaf-su01-4" and p == 7 and 1000 <= s < 1010:
            v["link_state"] = 1.0
        if switch == "leaf-su01-6" and p == 4 and s >= 1000:
            v["xmit_rate"] = v["rcv_rate"] = 0.5e9  # a link at half its peers' rate
        if switch == "leaf-su01-5" and p == 3:
            v["symbol_error"] = float("nan") if s in (200, 230, 260) else 40.0
            v["link_state"] = 1.0 if 700 <= s < 703 else 4.0

    cluster.hooks.append(gpu)
    cluster.port_hooks.append(port)
    return cluster


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("second_pass") / "second_pass.duckdb"
    land(path, _cluster().build())
    return path


@pytest.fixture
def ctx(store: Path) -> Iterator[AnalysisContext]:
    con: duckdb.DuckDBPyConnection = open_store(store, read_only=True)
    try:
        context = build_context(con)
        assert context is not None
        yield context
    finally:
        con.close()


def _whole(ctx: AnalysisContext, flags: pl.DataFrame, keys: Sequence[str], bucket_s: int,
           before_us: int, after_us: int) -> pl.DataFrame:
    """A stand-in for flagged_windows: every flagged key's whole read window."""
    return flags.select(*keys).unique().with_columns(
        pl.lit(ctx.read_from_us).alias("lo"), pl.lit(ctx.until_us).alias("hi"))


def _key(f: Finding) -> tuple[object, ...]:
    return (f.kind, f.entity, f.onset_us, f.detect_us, f.end_us, f.text, f.evidence,
            sorted((k, str(v)) for k, v in f.attrs.items()))


def test_windowed_second_passes_find_what_whole_reads_find(
        ctx: AnalysisContext, monkeypatch: pytest.MonkeyPatch) -> None:
    read: list[pl.DataFrame] = []

    def spy(*args: object) -> pl.DataFrame:
        frame = scans.flagged_windows(*args)  # type: ignore[arg-type]
        read.append(frame)
        return frame

    passes = (("ports", network, network.detect_ports), ("peers", peers, peers.detect_peers),
              ("port_rates", port_rates, port_rates.detect_port_rates))
    for _name, module, _detect in passes:
        monkeypatch.setattr(module, "flagged_windows", spy)
    found = {name: sorted(map(_key, detect(ctx))) for name, _module, detect in passes}
    kinds = {(k[0], k[1]) for keys in found.values() for k in keys}
    assert {("gpu_power_low", "gpu:n00003/6"), ("pcie_replays", "gpu:n00002/3"),
            ("port_errors", "link:leaf-su01-1/2"), ("link_down", "link:leaf-su01-4/7"),
            ("port_slow", "link:leaf-su01-6/4")} <= kinds
    # The stretches read are narrower than the data (each pass read some).
    assert len(read) == 3 and all(frame.height for frame in read)
    for frame in read:
        assert ((frame["hi"] - frame["lo"]) < ctx.until_us - ctx.read_from_us).all()
    ctx.cache.clear()
    for name, module, detect in passes:
        monkeypatch.setattr(module, "flagged_windows", _whole)
        assert sorted(map(_key, detect(ctx))) == found[name], name


def test_a_counter_missing_from_a_few_scrapes_is_no_rise(ctx: AnalysisContext) -> None:
    findings = network.detect_ports(ctx)
    assert [f.kind for f in findings if f.entity == "link:leaf-su01-5/3"] == ["link_down"]
    rising = [f for f in findings if f.kind == "port_errors"]
    assert [f.attrs["port"] for f in rising] == [2] and "+18" in rising[0].text


def test_flagged_windows_reach_merge_and_stay_in_the_read_window(ctx: AnalysisContext) -> None:
    step = 120 * US
    first = ctx.read_from_us // step * step
    flags = pl.DataFrame({"node": ["a", "a", "a", "b"],
                          "b": [first + 10 * step, first + 12 * step, first + 40 * step, first]})
    got = scans.flagged_windows(ctx, flags, ["node"], 120, 2 * step, step).rows()
    assert got == [
        ("a", first + 8 * step, first + 14 * step),  # two flags a bucket apart: one stretch
        ("a", first + 38 * step, first + 42 * step),
        ("b", ctx.read_from_us, first + 2 * step),  # clamped to the read window
    ]


def test_a_windowed_read_is_each_keys_rows_within_its_stretches(ctx: AnalysisContext) -> None:
    t0 = T0  # the first scrape
    keys = pl.DataFrame({"node": ["n00001", "n00001", "n00004"],
                         "lo": [t0, t0 + 3600 * US, t0 + 600 * US],
                         "hi": [t0 + 600 * US, t0 + 4200 * US, t0 + 900 * US]})
    got = scans.keyed_series(ctx, "gpu_samples", keys, "s.node, s.gpu, epoch_us(s.ts) AS t",
                             then_by=["gpu"])
    assert got.columns == ["w", "node", "gpu", "t"]
    assert got.height == 8 * (60 + 60 + 30)
    for lo, hi in (tuple(r) for r in keys.select("lo", "hi").rows()):
        part = got.filter(pl.col("w") == lo)
        assert part["t"].min() >= lo and part["t"].max() < hi
        assert part.sort("node", "gpu", "t").equals(part)


def test_findings_cite_the_event_ids_of_their_rows(ctx: AnalysisContext) -> None:
    # The series carry no ids (scans.row_ref); the few cited rows get theirs at the end.
    cited = [(f, "port_samples") for f in network.detect_ports(ctx)] + [
        (f, "gpu_samples") for f in peers.detect_peers(ctx)]
    assert cited
    for finding, table in cited:
        refs = (*finding.evidence, *finding.attrs.get("samples", ()))
        assert refs and not any("\x1f" in ref for ref in refs), finding
        rows = query_pl(ctx.con, f"SELECT * FROM {table} WHERE list_contains(?, event_id)",
                        [list(refs)])
        # An event is a batch (a scrape of a rack or of the switches): each cited one holds a
        # row of the finding's own port or node.
        own = (rows.filter((pl.col("switch") == finding.attrs["switch"])
                           & (pl.col("port") == finding.attrs["port"]))
               if table == "port_samples" else
               rows.filter(pl.col("node") == finding.attrs["node"]))
        assert set(own["event_id"]) == set(refs), finding
