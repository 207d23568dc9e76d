"""How the whole house depends on itself: imports go one way (no circle between any two modules,
counting imports inside functions and under ``TYPE_CHECKING``), and each floor imports only the
floors below it (docs/design.md; ``fleetlog/__init__.py`` says which floor is which).

The graph is read from the source with ``ast``, not from ``sys.modules``: an import that only
runs inside a function, or only for the type checker, is still a dependency of the design.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGES = ("ingest", "generators", "analysis", "act", "cli")  # folders installed as fleetlog.<stage>

KERNEL = ("fleetlog.ingest.contract", "fleetlog.ingest.store", "fleetlog.ingest.kafka")
INGESTION = tuple(f"fleetlog.ingest.{name}"
                  for name in ("ingester", "pipeline", "worker", "jsonl", "replay", "readers",
                               "metrics"))
TOP_FLOOR = ("fleetlog.cli", "fleetlog.demo", "fleetlog.follow", "fleetlog.act_follow")


def _modules() -> dict[str, Path]:
    """Every module of the house, by the name it is imported as -> its file."""
    files = [(("fleetlog", *p.relative_to(REPO / "fleetlog").with_suffix("").parts), p)
             for p in sorted((REPO / "fleetlog").glob("*.py"))]
    for stage in STAGES:
        files += [(("fleetlog", stage, *p.relative_to(REPO / stage).with_suffix("").parts), p)
                  for p in sorted((REPO / stage).rglob("*.py"))]
    out = {}
    for parts, path in files:
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of the dotted ``name`` that is a module of the house."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _targets(module: str, path: Path, tree: ast.AST, modules: dict[str, Path]) -> Iterable[str]:
    """The house modules ``module`` imports, anywhere in its source."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if (target := _resolve(alias.name, modules)) is not None:
                    yield target
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package of ``module``
                package = module.split(".")
                package = package if _is_package(path) else package[:-1]
                package = package[:len(package) - (node.level - 1)]
                base = ".".join([*package, *([base] if base else [])])
            for alias in node.names:
                # `from fleetlog.x.y import z`: module fleetlog.x.y.z if there is one, else
                # fleetlog.x.y (z is a name defined there)
                target = (f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules
                          else _resolve(base, modules))
                if target is not None:
                    yield target


def _graph() -> dict[str, set[str]]:
    """module -> the modules it imports. A package's ``__init__`` re-exporting its own
    sub-modules is left out: it makes no circle by itself (a sub-module importing names from
    its package is how packages are meant to be used)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text("utf-8"), str(path))
        graph[name] = {target for target in _targets(name, path, tree, modules)
                       if target != name
                       and not (_is_package(path) and target.startswith(f"{name}."))}
    return graph


def _tangles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other in a circle (strongly connected components
    of more than one module, Tarjan's algorithm), each sorted, in name order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(name: str) -> None:
        index[name] = low[name] = len(index)
        stack.append(name)
        on_stack.add(name)
        for target in sorted(graph.get(name, ())):
            if target not in index:
                visit(target)
                low[name] = min(low[name], low[target])
            elif target in on_stack:
                low[name] = min(low[name], index[target])
        if low[name] == index[name]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == name:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return sorted(out)


def _circle(graph: dict[str, set[str]], group: list[str]) -> list[str]:
    """One circle through the first module of ``group`` (shortest, breadth-first)."""
    members, start = set(group), group[0]
    came_from: dict[str, str] = {}
    todo = [start]
    while todo:
        name = todo.pop(0)
        for target in sorted(graph[name] & members):
            if target == start:
                path = [name]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [*reversed(path), start]
            if target not in came_from:
                came_from[target] = name
                todo.append(target)
    raise AssertionError(f"no circle in {group}")


def _under(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == p or name.startswith(f"{p}.") for p in prefixes)


def _edges(graph: dict[str, set[str]], sources: Iterable[str],
           targets: Iterable[str]) -> list[str]:
    """Imports from a module under ``sources`` to one under ``targets``, as "a -> b" lines."""
    sources, targets = tuple(sources), tuple(targets)
    return [f"{a} -> {b}" for a in sorted(graph) if _under(a, sources)
            for b in sorted(graph[a]) if _under(b, targets)]


def test_the_graph_sees_the_whole_house() -> None:
    graph = _graph()
    for name in ("fleetlog", "fleetlog.demo", "fleetlog.ingest.contract.events",
                 "fleetlog.ingest.readers.kmsg", "fleetlog.generators.simulator",
                 "fleetlog.analysis.detectors.xid", "fleetlog.cli.main"):
        assert name in graph, name
    # edges of every kind are seen: a plain import, a from-import of a module, one of a name
    assert "fleetlog.cli.main" in graph["fleetlog.__main__"]
    assert "fleetlog.generators.simulator" in graph["fleetlog.generators.run"]
    assert "fleetlog.ingest.contract" in graph["fleetlog.generators.topology"]


def test_no_import_circle() -> None:
    graph = _graph()
    tangles = _tangles(graph)
    assert tangles == [], "modules importing each other in a circle:\n" + "\n".join(
        f"{', '.join(group)}\n  e.g. {' -> '.join(_circle(graph, group))}" for group in tangles)


def test_generators_and_analysis_stay_below_ingestion_and_the_top_floor() -> None:
    graph = _graph()
    edges = _edges(graph, ("fleetlog.generators", "fleetlog.analysis"), TOP_FLOOR + INGESTION)
    assert edges == [], "imports from a lower floor:\n" + "\n".join(edges)


def test_the_kernel_imports_only_the_kernel() -> None:
    graph = _graph()
    edges = [edge for edge in _edges(graph, KERNEL, ("fleetlog",))
             if not _under(edge.split(" -> ")[1], KERNEL)]
    assert edges == [], "the kernel imports outside it:\n" + "\n".join(edges)


def test_act_stands_above_analysis_and_below_the_top_floor() -> None:
    """act may import the kernel and analysis; nothing below it imports it, and it imports
    neither the ingestion stage nor the generators nor the top floor."""
    graph = _graph()
    below = ("fleetlog.ingest", "fleetlog.generators", "fleetlog.analysis")
    up = _edges(graph, below, ("fleetlog.act",))
    assert up == [], "imports of act from below it:\n" + "\n".join(up)
    out = _edges(graph, ("fleetlog.act",), TOP_FLOOR + INGESTION + ("fleetlog.generators",))
    assert out == [], "act imports outside its floors:\n" + "\n".join(out)
    assert "fleetlog.act.actor" in graph


def test_generators_and_analysis_do_not_import_each_other() -> None:
    graph = _graph()
    edges = (_edges(graph, ("fleetlog.analysis",), ("fleetlog.generators",))
             + _edges(graph, ("fleetlog.generators",), ("fleetlog.analysis",)))
    assert edges == [], "sideways imports between stages:\n" + "\n".join(edges)
