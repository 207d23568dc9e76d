"""How long `fleetlog analyze` takes on a big store.

    # time the analysis of an existing store (e.g. from `fleetlog simulate`)
    .venv/bin/python bench/bench_analyze.py --db run.duckdb

    # build a synthetic 2,048-node day straight in DuckDB (SQL, ~140 M GPU rows and ~200 M port
    # rows, a handful of injected faults), then time the analysis of it
    .venv/bin/python bench/bench_analyze.py --synth /tmp/day.duckdb --nodes 2048 --hours 24

The synthetic store has the schema and row shapes of the real one (GPU batch per rack per scrape,
every port of every leaf and spine per scrape, a few jobs reporting steps) but is made by SQL, not
by the generator, so that a 2,048-node day takes minutes to build instead of hours. Prints the
analysis time per stage, the process's peak resident memory and the incidents found (JSON).
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

from fleetlog.analysis.context import ANALYSIS_MEMORY_LIMIT
from fleetlog.analysis.pipeline import analyze_store
from fleetlog.ingest import contract as c
from fleetlog.ingest.store import open_store, open_union, rollups
from fleetlog.ingest.store.writer import land

T0 = 1_767_571_200_000_000  # 2026-01-05T00:00:00Z


def _inventory(nodes: int) -> list[c.Envelope]:
    out: list[c.Payload] = []
    sus = -(-nodes // 32)
    for r in range(-(-nodes // 4)):
        out.append(c.RackRegistered(rack=f"r{r + 1:04d}", region="reg0", pdu="p", cooling_zone="z"))
    for su in range(sus):
        for rail in range(8):
            out.append(c.SwitchRegistered(switch=f"leaf-su{su + 1:02d}-{rail}", tier="leaf",
                                          region="reg0"))
    for n in range(nodes):
        name = f"n{n + 1:05d}"
        out.append(c.NodeRegistered(node=name, rack=f"r{n // 4 + 1:04d}", region="reg0",
                                    vcluster=f"vc{n * 2 // nodes}", gpu_count=8, gpu_model="H100",
                                    nic_count=8))
        for rail in range(8):
            out.append(c.LinkRegistered(switch=f"leaf-su{n // 32 + 1:02d}-{rail}",
                                        port=n % 32 + 1, peer=c.nic_entity(name, rail)))
    return [c.make_event(p, time_us=T0 - 1, source="bench") for p in out]


def synthesize(path: Path, nodes: int, hours: float) -> None:
    """A healthy cluster plus: XID 79 then absence, rising SBE then DBE, a silent node, a
    flapping cable, a failed job."""
    if path.exists():
        path.unlink()
    land(path, _inventory(nodes))
    con = open_store(path)
    scrapes = int(hours * 360)
    sus = -(-nodes // 32)
    t = "(TIMESTAMPTZ '2026-01-05 00:00:00+00' + to_microseconds(CAST(s AS BIGINT) * 10000000))"
    noise = "((hash(s, n, g) % 1000) / 1000.0)"
    print(f"building {nodes} nodes x {hours} h: GPU samples...", flush=True)
    con.execute(f"""INSERT INTO gpu_samples_raw
        SELECT 'b' || s || '-' || (n // 4) AS event_id, {t} AS ts,
          'n' || lpad(CAST(n + 1 AS VARCHAR), 5, '0') AS node, CAST(g AS UTINYINT) AS gpu,
          95 + 5 * {noise} AS util_pct, 1980 AS sm_clock_mhz,
          62 + (hash(n, g) % 8) + 3 * {noise} AS gpu_temp_c, 70 + 3 * {noise} AS mem_temp_c,
          640 + 40 * {noise} AS power_w, 60000 AS fb_used_mib,
          CASE WHEN n = 10 AND g = 2 AND s > {scrapes // 3}
               THEN (s - {scrapes // 3}) // 3 ELSE (hash(n, g) % 3) END AS ecc_sbe_vol_total,
          CASE WHEN n = 10 AND g = 2 AND s > {scrapes // 3 + 200} THEN 1 ELSE 0
               END AS ecc_dbe_vol_total,
          0 AS sram_ecc_total, 0 AS row_remap_pending, 0 AS row_remap_failure,
          0 AS nvlink_crc_flit_errors, 0 AS pcie_replays, 0 AS throttle_reasons
        FROM range({scrapes}) r(s), range({nodes}) a(n), range(8) b(g)
        WHERE NOT (n = 20 AND g = 5 AND s >= {scrapes // 2})
          AND NOT (n = 30 AND s BETWEEN {scrapes // 4} AND {scrapes // 4 + 300})""")
    gone_at = t.replace("CAST(s AS", f"CAST({scrapes // 2} AS")
    dbe_at = t.replace("CAST(s AS", f"CAST({scrapes // 3 + 201} AS")
    con.execute(f"""INSERT INTO xid_raw VALUES
        ('x1', {gone_at}, 'n00021', 5, NULL, 79, '', NULL, 'bench'),
        ('x2', {dbe_at}, 'n00011', 2, NULL, 48, '', NULL, 'bench')""")
    print("port samples...", flush=True)
    con.execute(f"""INSERT INTO port_samples_raw
        SELECT 'p' || s || '-' || l AS event_id, {t} AS ts,
          'leaf-su' || lpad(CAST(l // 8 + 1 AS VARCHAR), 2, '0') || '-' || (l % 8) AS switch,
          CAST(p + 1 AS USMALLINT) AS port, s * 1e6 AS xmit_data, s * 1e6 AS rcv_data,
          CASE WHEN l = 3 AND p = 4 AND s > {scrapes // 5} THEN (s - {scrapes // 5}) * 4
               ELSE hash(l, p) % 4 END AS symbol_error,
          0 AS rcv_errors,
          CASE WHEN l = 3 AND p = 4 AND s > {scrapes // 5 + 60} THEN 2 ELSE 0 END AS link_downed,
          0 AS link_error_recovery, 0 AS xmit_discards,
          CASE WHEN l = 3 AND p = 4 AND s IN ({scrapes // 5 + 60}, {scrapes // 5 + 61},
               {scrapes // 5 + 90}) THEN 1 ELSE 4 END AS link_state
        FROM range({scrapes}) r(s), range({sus * 8}) a(l), range(40) b(p)""")
    print("jobs...", flush=True)
    con.execute(f"""INSERT INTO job_events_raw
        SELECT 'j' || j || '-' || s, {t} + INTERVAL 5 SECOND, 'job' || j, 'job.step_reported',
          json_object('job', 'job' || j, 'step', s, 'step_time_s', 9.8 + (hash(j, s) % 10) / 50,
                      'tokens_per_s', 1e6, 'loss', 2.0 - s / 1e5)
        FROM range({scrapes}) r(s), range(16) a(j)""")
    con.execute(f"""INSERT INTO event_log
        SELECT 'log' || s, 'gpu.sampled', 1, {t}, 'bench', 'k', 0, NULL, now()
        FROM range({scrapes}) r(s)""")
    # What a writer landing these samples would have stored as each hour closed (the rows went
    # in by SQL, not through StoreWriter): the same hourly rollups, timed (landing's extra cost).
    started = time.perf_counter()
    rolled = rollups.rebuild(con)
    print(f"rolled up {rolled['hours']} hours in {time.perf_counter() - started:.1f} s", flush=True)
    con.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, help="time the analysis of this store")
    parser.add_argument("--synth", type=Path, help="build a synthetic store here, then time it")
    parser.add_argument("--nodes", type=int, default=2048)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--memory-limit", default=ANALYSIS_MEMORY_LIMIT,
                        help="DuckDB's memory cap (default: the one analyze uses)")
    args = parser.parse_args()
    path = args.db
    if args.synth:
        started = time.perf_counter()
        synthesize(args.synth, args.nodes, args.hours)
        print(f"built in {time.perf_counter() - started:.0f} s", flush=True)
        path = args.synth
    if path is None:
        parser.error("give --db PATH or --synth PATH")
    # The connection `fleetlog analyze` reads through: DuckDB capped at ANALYSIS_MEMORY_LIMIT.
    con = open_union([path], memory_limit=args.memory_limit)
    rows = con.execute("SELECT (SELECT count(*) FROM gpu_samples_raw), "
                       "(SELECT count(*) FROM port_samples_raw)").fetchone()
    started = time.perf_counter()
    result = analyze_store(con)
    wall = time.perf_counter() - started
    con.close()
    print(json.dumps({
        "db": str(path), "gpu_rows": rows[0] if rows else None,
        "port_rows": rows[1] if rows else None, "analysis_s": round(wall, 2),
        # the whole process's peak resident memory (Linux: ru_maxrss is in KiB)
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "stages_s": result.timings,
        "incidents": [(i.category, i.root) for i in result.incidents],
    }, indent=2))


if __name__ == "__main__":
    main()
