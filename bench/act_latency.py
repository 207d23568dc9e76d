"""How long ``fleetlog act --follow`` takes from a recommendation published to the node drained
in Slurm (and verified), on a real single-host Slurm and a real local Kafka broker.

    .venv/bin/python bench/act_latency.py --bootstrap 127.0.0.1:19392 --trials 5

Per trial: a fresh Slurm state, ``act --follow --execute`` started and given 3 s to join its
group, then ``recommend --publish`` of a simulated 8-node gpu_hw hour (drain on the first GPU
failure: 4 drains); the latency of each drain is its ``action.executed`` event time (taken after
the verification) minus the moment ``recommend --publish`` returned. Prints the median and p95.
The Slurm is the tests' (tests/act/slurm_cluster.py): one slurmd per node name on loopback.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import duckdb
from click.testing import CliRunner

from fleetlog.cli.main import cli

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "act"))
# The tests' cluster runner, loaded by path (tests/ is no package and no part of mypy's files).
Slurm: Any = importlib.import_module("slurm_cluster").Slurm

DRAIN_FIRST = ("[escalation]\nreboot_after = 1\ndrain_after = 1\n"
               "[circuit_breaker]\nmax_drain_share = 1.0\n")


def _invoke(argv: list[str]) -> None:
    result = CliRunner().invoke(cli, argv)
    if result.exit_code != 0:
        raise SystemExit(f"fleetlog {' '.join(argv)}: {result.output}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True, help="a running Kafka broker")
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="act-latency-"))
    slurm = Slurm(root / "slurm")
    (root / "slurm").mkdir()
    slurm.start()
    fleetlog = str(Path(sys.executable).with_name("fleetlog"))
    try:
        db, config = root / "fleet.duckdb", root / "drain-first.toml"
        config.write_text(DRAIN_FIRST)
        _invoke(["simulate", "--nodes", "8", "--duration", "1h", "--scenario", "gpu_hw", "--seed",
                 "0", "--to", f"duckdb:{db}"])
        _invoke(["analyze", "--db", str(db)])
        latencies: list[float] = []
        for trial in range(args.trials):
            slurm.reset()
            prefix = f"act-latency-{uuid.uuid4().hex[:8]}"
            act_db = root / f"act-{trial}.duckdb"
            proc = subprocess.Popen(
                [fleetlog, "act", "--follow", "--db", str(act_db), "--execute", "--slurm-conf",
                 str(slurm.conf), "--remediation-config", str(config), "--bootstrap",
                 args.bootstrap, "--topic-prefix", prefix, "--until-idle", "4s",
                 "--max-time", "60s"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(3)  # let it join its consumer group before anything is published
            store = root / f"publish-{trial}.duckdb"
            shutil.copy(db, store)
            _invoke(["recommend", "--db", str(store), "--remediation-config", str(config),
                     "--publish",
                     "--bootstrap", args.bootstrap, "--topic-prefix", prefix])
            published = time.time()
            proc.wait(timeout=90)
            con = duckdb.connect(str(act_db), read_only=True)
            times = [t / 1e6 for (t,) in con.execute(
                "SELECT epoch_us(ts) FROM event_log WHERE type = 'action.executed'").fetchall()]
            con.close()
            latencies += [t - published for t in times]
            print(f"trial {trial}: {len(times)} drains, verified "
                  f"{', '.join(f'{t - published:.3f}' for t in sorted(times))} s after publish")
        latencies.sort()
        p95 = latencies[round(0.95 * (len(latencies) - 1))]
        print(f"publish -> drained and verified: n={len(latencies)}, median "
              f"{statistics.median(latencies):.3f} s, p95 {p95:.3f} s")
    finally:
        slurm.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
