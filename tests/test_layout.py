"""The package's layout: no import cycle, and the CLI entry point imported by nothing.

The graph is read from the source with ``ast`` (every ``import`` statement, at module
level or inside a function), so a lazy import cannot hide a cycle either. The same graph
is printed by ``python -m tests.test_layout`` (see the README's development section).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mia_bench"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """``module -> modules of the package it imports`` (submodule imports resolved)."""
    modules = {module_name(p): p for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            found |= {t for t in targets if t in modules and t != name}
        graph[name] = found
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_find_cycle_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_package_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 50
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_cli_entry_point_is_imported_by_nothing():
    importers = [m for m, deps in import_graph().items() if "mia_bench.cli" in deps]
    assert importers == ["mia_bench.__main__"]


def test_layout_has_the_architectures_subpackages():
    graph = import_graph()
    for sub in ("store", "audit", "study", "attacks", "callbacks", "data", "nets"):
        assert f"mia_bench.{sub}" in graph
    # the store depends on nothing above it
    store = {m for m in graph if m.startswith("mia_bench.store")}
    above = ("mia_bench.audit", "mia_bench.study", "mia_bench.callbacks", "mia_bench.attacks")
    for module in store:
        assert not [d for d in graph[module] if d.startswith(above)], module


if __name__ == "__main__":
    graph = import_graph()
    for module in sorted(graph):
        print(module, "->", ", ".join(sorted(graph[module])) or "-")
    print("cycle:", find_cycle(graph))
