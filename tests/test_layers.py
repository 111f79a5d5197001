"""Imports point one way: each package of llmserve may import only the packages of lower layers. The
arrows that still run back up are listed here, so that none is added; issue 16's next steps remove them."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "llmserve"
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
    "cli": 8,
    "__main__": 9,
}
STILL_BACK_UP: set[tuple[str, str]] = set()


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    return LAYER.get(parts[1]) if len(parts) > 1 else None


def test_every_module_lives_in_a_layer() -> None:
    for path in PACKAGE.rglob("*.py"):
        top = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        assert top in LAYER or top == "__init__", f"{path}: not in a layer of tests/test_layers.py"


def test_imports_point_down() -> None:
    back: set[tuple[str, str]] = set()
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("llmserve."):
                here, there = layer_of(module), layer_of(node.module)
                if here is not None and there is not None and here < there:
                    back.add((module, node.module))
    assert back == STILL_BACK_UP
