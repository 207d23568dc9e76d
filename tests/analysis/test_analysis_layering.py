"""How the analysis modules depend on each other: imports go one way (no circle, counting
imports inside functions and under ``TYPE_CHECKING``), and only evaluation reaches the ground
truth."""

from __future__ import annotations

import ast
from pathlib import Path

import fleetlog.analysis

ROOT = Path(fleetlog.analysis.__file__).parent
PREFIX = "fleetlog.analysis"
# The what-if replay is an evaluation too: it pairs failures with the truth fault behind them.
EVALUATION = {f"{PREFIX}.evaluate", f"{PREFIX}.whatif_data"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join((PREFIX, *parts))] = path
    return out


def _imports() -> dict[str, set[str]]:
    """module -> the analysis modules it imports, anywhere in its source."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(
                    PREFIX):
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    graph[name].add(sub if sub in modules else node.module)
            elif isinstance(node, ast.Import):
                graph[name].update(a.name for a in node.names if a.name in modules)
    return graph


def _reach(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = list(graph[start])
    while todo:
        name = todo.pop()
        if name not in seen and name in graph:
            seen.add(name)
            todo.extend(graph[name])
    return seen


def test_no_module_imports_itself_through_others() -> None:
    graph = _imports()
    circles = sorted(name for name in graph if name in _reach(graph, name))
    assert circles == []


def test_only_evaluation_reaches_the_ground_truth() -> None:
    graph = _imports()
    reaching = {name for name in graph if f"{PREFIX}.evaluate" in _reach(graph, name)}
    assert reaching <= EVALUATION
    readers = {name for name, path in _modules().items()
               if "FROM truth_faults" in path.read_text("utf-8")
               or "load_truth(" in path.read_text("utf-8")}
    assert readers == {f"{PREFIX}.evaluate"}


def test_production_code_stays_clear_of_evaluation() -> None:
    graph = _imports()
    for name in ("recommend", "job_actions", "capacity", "precursors", "report", "state",
                 "pipeline"):
        assert not _reach(graph, f"{PREFIX}.{name}") & EVALUATION, name
