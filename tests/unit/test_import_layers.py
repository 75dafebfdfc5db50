"""clara_ray's packages import one another without cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import clara_ray

_ROOT = Path(clara_ray.__file__).parent


def _unit(module: str) -> str:
    """The package-level unit of a clara_ray module: ``clara_ray.core.actor`` -> ``core``;
    a top-level module (``clara_ray.settings``) is a unit of its own."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _module_name(path: Path) -> str:
    rel = path.relative_to(_ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, module: str) -> set[str]:
    """Every clara_ray module ``path`` imports, at any depth (TYPE_CHECKING and function
    bodies included)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.add(name)
            found.update(f"{name}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("clara_ray.")}


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    modules = {_module_name(p): p for p in _ROOT.rglob("*.py")}
    for module, path in modules.items():
        unit = _unit(module)
        if not unit:
            continue
        for name in _imports(path, module):
            # ``from clara_ray.x import y`` may name a module or an attribute: keep what exists
            while name not in modules and "." in name:
                name = name.rpartition(".")[0]
            other = _unit(name)
            if other and other != unit:
                graph.setdefault(unit, set()).add(other)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected set of units (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_packages_import_without_cycles() -> None:
    cycles = _cycles(_graph())
    assert not cycles, "import cycles between clara_ray packages: " + "; ".join(
        " <-> ".join(c) for c in cycles
    )
