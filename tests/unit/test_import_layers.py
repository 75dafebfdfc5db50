"""clara_ray and serve import without cycles: neither between clara_ray's packages nor
between any two modules of clara_ray and serve."""

from __future__ import annotations

import ast
from pathlib import Path

import clara_ray

_REPO = Path(clara_ray.__file__).parent.parent
_TOP_LEVEL = ("clara_ray", "serve")


def _unit(module: str) -> str:
    """The package-level unit of a clara_ray module: ``clara_ray.core.actor`` -> ``core``;
    a top-level module (``clara_ray.settings``) is a unit of its own."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _module_name(path: Path) -> str:
    rel = path.relative_to(_REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _ours(name: str) -> bool:
    return any(name == top or name.startswith(f"{top}.") for top in _TOP_LEVEL)


def _imports(path: Path, module: str) -> set[str]:
    """Every clara_ray or serve name ``path`` imports, at any depth (TYPE_CHECKING and
    function bodies included)."""
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
    return {name for name in found if _ours(name)}


def _module_graph() -> dict[str, set[str]]:
    """Each module of clara_ray and serve -> the modules of theirs it imports.

    ``from package import name`` may name a module or an attribute: the longest existing
    module prefix counts.  An import of one's own ancestor package is left out: importing a
    module runs its packages' ``__init__`` first anyway, and an ``__init__`` re-exporting
    its submodules is normal.
    """
    modules = {_module_name(p): p for top in _TOP_LEVEL for p in (_REPO / top).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        for name in _imports(path, module):
            while name not in modules and "." in name:
                name = name.rpartition(".")[0]
            if name in modules and name != module and not module.startswith(f"{name}."):
                graph.setdefault(module, set()).add(name)
    return graph


def _package_graph() -> dict[str, set[str]]:
    """The module graph between clara_ray's package-level units."""
    graph: dict[str, set[str]] = {}
    for module, names in _module_graph().items():
        unit = _unit(module)
        if not module.startswith("clara_ray.") or not unit:
            continue
        for name in names:
            other = _unit(name)
            if name.startswith("clara_ray.") and other and other != unit:
                graph.setdefault(unit, set()).add(other)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The nodes of each strongly connected set of more than one node, sorted (Tarjan)."""
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


def _report(what: str, cycles: list[list[str]]) -> str:
    return f"import cycles between {what}: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_packages_import_without_cycles() -> None:
    cycles = _cycles(_package_graph())
    assert not cycles, _report("clara_ray packages", cycles)


def test_modules_import_without_cycles() -> None:
    cycles = _cycles(_module_graph())
    assert not cycles, _report("modules of clara_ray and serve", cycles)
