"""The package's architecture as a test: layers import only downward, no import cycles, no private names
across modules. docs/architecture.md draws the same layers; change both together.

The import graph is read statically (every ``import`` statement, including those inside functions), so an
import hidden in a function body to dodge a cycle is still an edge here.
"""

from __future__ import annotations

import ast
import importlib
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "bastion"

# Bottom to top. A module may import from its own layer or any layer below it, never above.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "core",
        (
            "bastion._typing",
            "bastion.errors",
            "bastion.registry",
            "bastion.io",
            "bastion.compute",
            "bastion.config",
            "bastion.domain",
            "bastion.threat",
            "bastion.goals",
            "bastion.ranks",
            "bastion.progress",
        ),
    ),
    ("data", ("bastion.data",)),
    ("models", ("bastion.models",)),
    ("attacks", ("bastion.attacks",)),
    ("defenses", ("bastion.defenses",)),
    ("evaluation", ("bastion.evaluation",)),
    ("training", ("bastion.training",)),
    ("artifacts", ("bastion.artifacts",)),
    ("render", ("bastion.render",)),
    ("app", ("bastion.app",)),
    ("service", ("bastion.service",)),
    ("cli", ("bastion.cli", "bastion.__main__")),
)
FACADE = "bastion"  # the root package: a lazy facade over the public API, above every layer


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    names: tuple[str, ...]
    line: int


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


MODULES = all_modules()


def resolve(source: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = source.split(".") if path.name == "__init__.py" else source.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def edges() -> list[Edge]:
    found = []
    for source, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found += [Edge(source, a.name, (), node.lineno) for a in node.names if a.name.startswith("bastion")]
            elif isinstance(node, ast.ImportFrom):
                target = resolve(source, path, node)
                if not target.startswith("bastion"):
                    continue
                for alias in node.names:  # `from pkg import submodule` is an edge to the submodule
                    sub = f"{target}.{alias.name}"
                    found.append(Edge(source, sub if sub in MODULES else target, (alias.name,), node.lineno))
    return found


EDGES = edges()


def layer_of(module: str) -> int:
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS and docs/architecture.md")


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        if module != FACADE:
            layer_of(module)


def test_imports_only_go_down() -> None:
    upward = [
        f"{e.source} ({LAYERS[layer_of(e.source)][0]}) imports {e.target} ({LAYERS[layer_of(e.target)][0]}) "
        f"at line {e.line}"
        for e in EDGES
        if e.source != FACADE and e.target != FACADE and layer_of(e.target) > layer_of(e.source)
    ]
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_only_dunders_come_from_the_facade() -> None:
    bad = [
        f"{e.source}:{e.line} imports {e.names} from the root package"
        for e in EDGES
        if e.target == FACADE and e.source != FACADE and not all(n.startswith("__") for n in e.names)
    ]
    assert not bad, "\n".join(bad)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None (iterative DFS with colours)."""
    state: dict[str, int] = {}
    for start in sorted(graph):
        if state.get(start):
            continue
        stack: list[tuple[str, list[str]]] = [(start, sorted(graph[start]))]
        path = [start]
        state[start] = 1
        while stack:
            node, todo = stack[-1]
            if not todo:
                state[node] = 2
                stack.pop()
                path.pop()
                continue
            nxt = todo.pop()
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append((nxt, sorted(graph.get(nxt, ()))))
    return None


def test_find_cycle_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles() -> None:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for e in EDGES:
        # A package importing its own submodules is how __init__ re-exports; the reverse edge (a submodule
        # importing its package's __init__) is what would close a cycle, and it is counted.
        if e.target in MODULES and e.target != e.source and e.source != FACADE:
            graph[e.source].add(e.target)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def private_module(module: str) -> str | None:
    """The package a private module (a ``_name`` path component) belongs to, or None if it is public."""
    parts = module.split(".")
    for i, part in enumerate(parts[1:], start=1):
        if part.startswith("_") and not part.startswith("__"):
            return ".".join(parts[:i])
    return None


def test_no_private_names_across_modules() -> None:
    bad = []
    for e in EDGES:
        if e.target == e.source:
            continue
        private = [n for n in e.names if n.startswith("_") and not n.startswith("__")]
        if private:
            bad.append(f"{e.source}:{e.line} imports private {private} from {e.target}")
        owner = private_module(e.target)
        if owner and not (e.source == owner or e.source.startswith(owner + ".")):
            bad.append(f"{e.source}:{e.line} imports the private module {e.target} from outside {owner}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != "bastion.__main__"))  # __main__ runs the CLI
def test_every_module_imports(module: str) -> None:
    importlib.import_module(module)
