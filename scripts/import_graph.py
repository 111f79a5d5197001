#!/usr/bin/env python3
"""Prints llmserve's import graph: modules per folder, each module's layer (1 + the deepest layer it
imports), and the cycles. Imports under `if TYPE_CHECKING:` and inside functions count too (they are
still dependencies), each marked. Usage: python3 scripts/import_graph.py [--edges]"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "llmserve"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != "llmserve":
                found.add(name)
    return found


def main() -> None:
    files = {module_name(p): p for p in ROOT.rglob("*.py")}
    graph = {m: imports(p, set(files)) - {m} for m, p in files.items()}
    layer: dict[str, int] = {}
    cycles: list[str] = []

    def depth(m: str, stack: tuple[str, ...]) -> int:
        if m in layer:
            return layer[m]
        if m in stack:
            cycles.append(" -> ".join([*stack[stack.index(m) :], m]))
            return 0
        layer[m] = 1 + max((depth(d, (*stack, m)) for d in graph[m]), default=0)
        return layer[m]

    for m in sorted(graph):
        depth(m, ())
    folders: dict[str, list[str]] = defaultdict(list)
    for m in graph:
        parts = m.split(".")
        in_package = len(parts) > 2 or (len(parts) == 2 and files[m].name == "__init__.py")
        folders[parts[1] if in_package else "(top)"].append(m)
    print(f"{len(graph)} modules, {max(layer.values())} layers, {len(set(cycles))} import cycles")
    for folder in sorted(folders):
        names = sorted(folders[folder], key=lambda m: (layer[m], m))
        listed = ", ".join(f"{m.removeprefix('llmserve.')}[{layer[m]}]" for m in names)
        print(f"{folder}/ ({len(names)}): {listed}")
    for cycle in sorted(set(cycles)):
        print("cycle:", cycle)
    if "--edges" in sys.argv:
        for m in sorted(graph):
            print(m, "->", ", ".join(sorted(graph[m])))


if __name__ == "__main__":
    main()
