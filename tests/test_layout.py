"""The shape of ``shared/``: the engine knows no operation, and no module imports itself back.

Read from the source (every ``import``, at module level or inside a function; those under
``if TYPE_CHECKING`` too, since a circle of types is still a circle of ideas): one node per module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / "shared"
OPERATIONS = ("shared.onboarding", "shared.rotation", "shared.offboarding", "shared.operations")


def _module_of(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    modules = {_module_of(path): path for path in SHARED.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            found |= {target for target in targets if target in modules and target != name}
        graph[name] = found
    return graph


def test_the_engine_imports_no_operation() -> None:
    graph = _imports()
    engine = {name: deps for name, deps in graph.items() if name.startswith("shared.engine")}
    assert engine, "shared/engine is where the engine lives"
    leaks = {name: sorted(d for d in deps if d.startswith(OPERATIONS)) for name, deps in engine.items()}
    assert {name: deps for name, deps in leaks.items() if deps} == {}


def test_shared_has_no_import_circle() -> None:
    graph = _imports()
    state: dict[str, int] = {}
    circles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                circles.append([*trail[trail.index(dep):], dep] if dep in trail else [node, dep])
            elif dep not in state:
                visit(dep, [*trail, dep])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert circles == []


@pytest.mark.parametrize("package", ["shared.onboarding", "shared.rotation", "shared.offboarding"])
def test_an_operation_never_imports_the_registry(package: str) -> None:
    graph = _imports()
    users = sorted(name for name, deps in graph.items() if name.startswith(package) and "shared.operations" in deps)
    assert users == []
