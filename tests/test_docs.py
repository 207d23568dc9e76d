"""Docs that cannot drift.

- every SQL block in docs/store.md runs against a simulated store, and its views table lists the
  columns the store really has;
- docs/commands.md and docs/events.md are what docs/generate.py makes from the code;
- every link from the README or docs/ to a local file (and heading) resolves;
- the README stays short, and docs/design.md keeps the headings code comments cite.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import click
import duckdb
import pytest
from click.testing import CliRunner

from fleetlog.analysis.sql import run_query
from fleetlog.cli.main import cli
from fleetlog.ingest import contract as c
from fleetlog.ingest import store as fleet_store

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
STORE_DOC = DOCS / "store.md"
BLOCKS = re.findall(r"```sql\n(.*?)```", STORE_DOC.read_text(), flags=re.S)
PAGES = sorted([README, *DOCS.glob("*.md")])
GENERATED = ("commands.md", "events.md")
README_MAX_LINES = 250
# Headings code comments cite as docs/design.md#<anchor>.
DESIGN_ANCHORS = ("fault-taxonomy", "topics-and-keys", "entities", "the-store", "analysis",
                  "checkpoint-math", "dependencies")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("docs") / "fleet.duckdb"
    runner = CliRunner()
    for args in (["simulate", "--nodes", "32", "--duration", "6h", "--seed", "11", "--scenario",
                  "mixed", "--fault-rate", "60", "--to", f"duckdb:{db}"],
                 ["analyze", "--db", str(db)]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, result.output
    return db


# ------------------------------------------------------------------------------------------
# docs/store.md


def test_the_store_page_has_the_queries() -> None:
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("sql", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_store_page_sql_runs_and_returns_rows(store: Path, sql: str) -> None:
    result = run_query([store], sql)
    assert result.columns
    assert result.rows, f"no rows for:\n{sql}"


def test_store_page_lists_every_view_with_its_columns(store: Path) -> None:
    rows = dict(re.findall(r"^\| `(\w+)` \| `([^`]*)`", STORE_DOC.read_text(), flags=re.M))
    con = duckdb.connect(str(store), read_only=True)
    try:
        for view in fleet_store.PUBLIC_VIEWS:
            columns = ", ".join(r[0] for r in con.execute(f'DESCRIBE "{view}"').fetchall())
            assert view in rows, f"docs/store.md does not list the view {view}"
            assert rows[view] == columns, f"docs/store.md: {view} has columns {columns}"
    finally:
        con.close()


# ------------------------------------------------------------------------------------------
# Generated pages


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_generate", DOCS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", GENERATED)
def test_generated_page_is_current(name: str) -> None:
    expected = _generator().PAGES[name]()
    path = DOCS / name
    assert path.exists() and path.read_text() == expected, (
        f"docs/{name} is out of date with the code: run `.venv/bin/python docs/generate.py` "
        "and commit the result")


def _command_paths(group: click.Group, prefix: str) -> list[str]:
    ctx = click.Context(group, info_name=prefix)
    paths = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        paths.append(f"{prefix} {name}")
        if isinstance(command, click.Group):
            paths += _command_paths(command, f"{prefix} {name}")
    return paths


def test_the_generated_pages_cover_every_command_and_event_type() -> None:
    commands = (DOCS / "commands.md").read_text()
    for path in _command_paths(cli, "fleetlog"):
        assert f"## {path}\n" in commands, path
    events = (DOCS / "events.md").read_text()
    for event_type in c.PAYLOAD_TYPES:
        assert f"### {event_type}\n" in events, event_type
    for signal in (*c.GPU_SIGNALS, *c.PORT_SIGNALS):
        assert f"| `{signal.column}` | `{signal.source}` |" in events, signal.column


# ------------------------------------------------------------------------------------------
# Links, length, anchors


def _prose(text: str) -> str:
    """The text outside fenced code blocks and inline code."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link counts as its text
    text = text.replace("`", "").replace("*", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    for line in re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M).splitlines():
        match = re.match(r"^#{1,6} (.+?)\s*#*$", line)
        if match:
            base = slug(match.group(1))
            name, n = base, 0
            while name in found:  # GitHub numbers repeated headings
                n += 1
                name = f"{base}-{n}"
            found.add(name)
    return found


def local_links(page: Path) -> list[str]:
    targets = re.findall(r"\]\(([^)\s]+)\)", _prose(page.read_text()))
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]  # no http:, mailto:


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_every_local_link_resolves(page: Path) -> None:
    broken = []
    for target in local_links(page):
        path_part, _, anchor = target.partition("#")
        path = (page.parent / path_part).resolve() if path_part else page
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{target}: no heading #{anchor} in {path.name}")
    assert not broken, f"{page.relative_to(ROOT)}: broken links:\n" + "\n".join(broken)



def _resolves(dotted: str) -> bool:
    """Whether ``fleetlog.x.y`` names a module, or an attribute of one."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def test_every_module_the_docs_name_exists() -> None:
    """Prose names code by its installed name (fleetlog.ingest.store.writer), and that name exists.
    Topic names (fleetlog.gpu) and file names (fleetlog.duckdb) look alike and are left out."""
    missing = set()
    for page in PAGES:
        for name in re.findall(r"(?<![\w/.-])fleetlog(?:\.\w+)+", page.read_text()):
            parts = name.split(".")
            if len(parts) == 2 and parts[1] in (*c.TOPIC_FAMILIES, "duckdb"):
                continue
            if not _resolves(name):
                missing.add(f"{page.relative_to(ROOT)}: {name}")
    assert not missing, "the docs name code that does not exist:\n" + "\n".join(sorted(missing))

def test_the_readme_links_every_docs_page() -> None:
    linked = {t.partition("#")[0] for t in local_links(README)}
    for page in DOCS.glob("*.md"):
        assert f"docs/{page.name}" in linked, f"README.md does not link docs/{page.name}"


def test_the_readme_is_short() -> None:
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines (at most {README_MAX_LINES}): move reference to docs/")


def test_design_keeps_the_headings_code_cites() -> None:
    found = anchors(DOCS / "design.md")
    missing = [a for a in DESIGN_ANCHORS if a not in found]
    assert not missing, f"docs/design.md lost the headings {missing}; code comments cite them"


def test_slug_matches_github() -> None:
    assert slug("Ingestion: `fleetlog ingest`") == "ingestion-fleetlog-ingest"
    assert slug("What-if: `fleetlog whatif`") == "what-if-fleetlog-whatif"
    assert slug("node.went_down") == "nodewent_down"
    assert slug("Dependencies and what each is for") == "dependencies-and-what-each-is-for"
