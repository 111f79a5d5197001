"""Imports point one way: each package of llmserve may import only the packages of lower layers (an arrow
that has to run back up for a while is listed in STILL_BACK_UP, so that none is added unseen), and no
module imports itself through others. Every import counts: under `if TYPE_CHECKING:` and inside
functions too (scripts/import_graph.py prints the same graph)."""

from __future__ import annotations

import ast
from pathlib import Path

from paths import ROOT

PACKAGE = ROOT / "llmserve"
LAYER = {
    "errors": 0,
    "config": 1,
    "protocol": 1,
    "engine": 2,
    "models": 3,
    "service": 4,
    "server": 5,
    "chat": 6,
    "build": 7,
    "cluster": 8,
    "cli": 9,
    "__main__": 10,
}
STILL_BACK_UP: set[tuple[str, str]] = set()


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    return LAYER.get(parts[1]) if len(parts) > 1 else None


def test_every_module_lives_in_a_layer() -> None:
    for path in PACKAGE.rglob("*.py"):
        top = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        assert top in LAYER or top == "__init__", f"{path}: not in a layer of tests/project/test_layers.py"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def known(name: str) -> str | None:
    """The llmserve module that `name` (a module, or a name defined in one) lives in."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imported(module: str) -> set[str]:
    """The llmserve modules that `module` imports; `from package import name` imports the package, and
    the submodule `name` when there is one (as scripts/import_graph.py counts them)."""
    found: set[str | None] = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.Import):
            found |= {known(alias.name) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {known(node.module)} | {known(f"{node.module}.{alias.name}") for alias in node.names}
    return {name for name in found if name is not None and name != module}


GRAPH = {module: imported(module) for module in MODULES}


def up(here: str, there: str) -> bool:
    low, high = layer_of(here), layer_of(there)
    return low is not None and high is not None and low < high


def test_imports_point_down() -> None:
    back = {(module, there) for module, imports in GRAPH.items() for there in imports if up(module, there)}
    assert back == STILL_BACK_UP


def test_no_import_cycle() -> None:
    cycles: list[str] = []
    done: set[str] = set()

    def visit(path: list[str]) -> None:
        for there in sorted(GRAPH[path[-1]]):
            if there in path:
                cycles.append(" -> ".join([*path[path.index(there) :], there]))
            elif there not in done:
                visit([*path, there])
        done.add(path[-1])

    for module in sorted(GRAPH):
        if module not in done:
            visit([module])
    assert cycles == []
