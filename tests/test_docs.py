"""Docs that cannot drift: every SQL block in the README runs against a simulated store."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from fleetlog.analysis.sql import run_query
from fleetlog.cli.main import cli

README = Path(__file__).parent.parent / "README.md"
BLOCKS = re.findall(r"```sql\n(.*?)```", README.read_text(), flags=re.S)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("docs") / "fleet.duckdb"
    runner = CliRunner()
    for args in (["simulate", "--nodes", "32", "--hours", "6", "--seed", "11", "--scenario",
                  "mixed", "--fault-rate", "60", "--to", f"duckdb:{db}"],
                 ["analyze", "--db", str(db)]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, result.output
    return db


def test_the_readme_has_the_queries() -> None:
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("sql", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_sql_runs_and_returns_rows(store: Path, sql: str) -> None:
    result = run_query([store], sql)
    assert result.columns
    assert result.rows, f"no rows for:\n{sql}"
