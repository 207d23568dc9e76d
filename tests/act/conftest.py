"""Fixtures of the act tests: a real single-host Slurm (``slurm_cluster.Slurm``; skipped, with the
reason, only when its binaries are absent) and a simulated, analyzed gpu_hw store."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from slurm_cluster import BINARIES, Slurm

from fleetlog.cli.main import cli


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slurm]:
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        pytest.skip(f"Slurm/munge binaries missing ({', '.join(missing)}): `make test` "
                    "installs Debian's slurmctld slurmd slurm-client munge (as root)")
    cluster = Slurm(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def slurm(slurm_cluster: Slurm) -> Slurm:
    slurm_cluster.reset()
    return slurm_cluster


@pytest.fixture(scope="module")
def gpu_hw_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A simulated 8-node gpu_hw hour, analyzed, with recommendations from a policy that drains
    a node on its first GPU failure (and no breaker at recommendation time: act's own breaker is
    what the tests exercise)."""
    folder = tmp_path_factory.mktemp("gpu_hw")
    db = folder / "fleet.duckdb"
    config = folder / "drain-first.toml"
    config.write_text("[escalation]\nreboot_after = 1\ndrain_after = 1\n"
                      "[circuit_breaker]\nmax_drain_share = 1.0\n")
    runner = CliRunner()
    for argv in (["simulate", "--nodes", "8", "--duration", "1h", "--scenario", "gpu_hw", "--seed",
                  "0", "--to", f"duckdb:{db}"],
                 ["analyze", "--db", str(db)],
                 ["recommend", "--db", str(db), "--remediation-config", str(config)]):
        result = runner.invoke(cli, argv)
        assert result.exit_code == 0, result.output
    return db
