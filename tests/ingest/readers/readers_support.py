"""Helpers for the reader tests: where the real captures are, and a CLI runner.

Captures come from ``../shared/data`` (relative to the repository); tests that need them skip
with a clear reason where that folder is absent (a user's clone). Small excerpts that the tests
always need are in ``tests/fixtures/`` with their origin and license beside them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pytest
from click.testing import CliRunner

from fleetlog.cli.main import cli

DATA = (Path(__file__).parents[3] / ".." / "shared" / "data").resolve()
FIXTURES = Path(__file__).parents[2] / "fixtures"


def capture(relative: str) -> Path:
    """A real capture under shared/data, or skip the test saying where it was looked for."""
    path = DATA / relative
    if not path.exists():
        pytest.skip(f"real capture {relative} not found under {DATA} (shared/data is not part "
                    "of a user's clone)")
    return path


def run(*args: str | Path) -> tuple[int, Any, str]:
    """Run the fleetlog CLI: (exit code, parsed JSON output or raw text, stderr)."""
    result = CliRunner().invoke(cli, [str(a) for a in args])
    try:
        data: Any = json.loads(result.stdout)
    except ValueError:
        data = result.stdout
    return result.exit_code, data, result.stderr


def query(db: Path, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()
