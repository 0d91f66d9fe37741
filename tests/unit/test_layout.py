"""The house rules of the package's layout: no import circle, imports run downward, no module over 600 lines."""

import ast

import pytest

from tests.helpers import REPO_ROOT

PACKAGE = REPO_ROOT / "lightning_synflow"
#: Lowest first: a module may import its own layer or a lower one.
LAYERS = ["masks", "graph", "pruning", "checkpoint_format", "report", "export", "callback", "cli"]


def _module_name(path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Each module's imports of other modules of the package, function-local ones included."""
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lightning_synflow"):
                found |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
            elif isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
        graph[name] = {target for target in found if target in modules and target != name}
    return graph


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def test_no_import_circle():
    graph = _imports()

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            current = todo.pop()
            if current == goal:
                return True
            if current not in seen:
                seen.add(current)
                todo.extend(graph[current])
        return False

    circles = sorted((a, b) for a, targets in graph.items() for b in targets if reaches(b, a))
    assert not circles, f"modules that import each other, directly or not: {circles}"


def test_imports_run_downward():
    upward = [
        (module, target)
        for module, targets in _imports().items()
        for target in targets
        if None not in (_layer(module), _layer(target)) and _layer(target) > _layer(module)
    ]
    assert not upward, f"imports from a higher layer ({' < '.join(LAYERS)}): {upward}"


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_over_600_lines(path):
    assert len(path.read_text().splitlines()) <= 600
