"""Regenerates crd_schemas.json from CustomResourceDefinition files: for each served version of each CRD,
its `openAPIV3Schema` under the key GROUP/VERSION/KIND, with the documentation-only `description` keys
dropped (nothing else changes). Run: python3 tests/data/extract_crd_schemas.py CRD.yaml... (README.md
names the files and the commits they come from)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

OUT = Path(__file__).with_name("crd_schemas.json")


def undocumented(node: Any) -> Any:
    if isinstance(node, dict):
        # a property may itself be named "description" (its schema is a dict): keep that one
        return {k: undocumented(v) for k, v in node.items() if k != "description" or isinstance(v, dict)}
    if isinstance(node, list):
        return [undocumented(v) for v in node]
    return node


def schemas(path: Path) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for document in yaml.safe_load_all(path.read_text()):
        if not document or document.get("kind") != "CustomResourceDefinition":
            continue
        spec = document["spec"]
        for version in spec["versions"]:
            if version.get("served"):
                key = f"{spec['group']}/{version['name']}/{spec['names']['kind']}"
                found[key] = undocumented(version["schema"]["openAPIV3Schema"])
    return found


def main(paths: list[str]) -> None:
    found: dict[str, Any] = {}
    for path in paths:
        found.update(schemas(Path(path)))
    OUT.write_text(json.dumps(dict(sorted(found.items())), separators=(",", ":"), sort_keys=True) + "\n")
    print(f"{OUT}: {', '.join(sorted(found))}")


if __name__ == "__main__":
    main(sys.argv[1:])
