"""Regenerates openai_schemas.json from OpenAI's openapi.yaml: the schemas named in ROOTS and their
`$ref` closure, with `nullable: true` rewritten to JSON-Schema null alternatives and documentation-only
keys dropped (nothing else changes). Run: python3 tests/data/extract_openai_schemas.py PATH/openapi.yaml
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

ROOTS = (
    # chat completions, completions, embeddings, models, errors
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "ListModelsResponse",
    "Model",
    "CreateCompletionResponse",
    "CreateEmbeddingResponse",
    "ErrorResponse",
    "Error",
    "CreateChatCompletionRequest",
    "CreateCompletionRequest",
    "CreateEmbeddingRequest",
    # the Responses API: the response, its stream events, its stored input items, the request
    # (DELETE /responses/{id} has no schema, only an example: {"id", "object": "response", "deleted": true})
    "Response",
    "ResponseStreamEvent",
    "ResponseItemList",
    "CreateResponse",
)
DOC_KEYS = frozenset(
    {"description", "examples", "title", "deprecated", "x-oaiMeta", "x-oaiTypeLabel", "x-oaiExpandable"}
)
COMMENT = (
    "Extracted from openai/openai-openapi openapi.yaml (info.version 2.3.0) by extract_schemas.py; "
    "nullable:true rewritten to JSON Schema null alternatives; doc keys dropped."
)


def _doc(key: str, value: Any) -> bool:
    """Documentation only; a string `example` too (the first extraction kept numeric ones: kept so)."""
    return key in DOC_KEYS or key.startswith("x-stainless") or (key == "example" and isinstance(value, str))


def _clean(node: Any) -> Any:
    if isinstance(node, list):
        return [_clean(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: _clean(v) for k, v in node.items() if not _doc(k, v)}
    if isinstance(node.get("properties"), dict):  # property names are names, never doc keys
        out["properties"] = {k: _clean(v) for k, v in node["properties"].items()}
    if out.pop("nullable", False) is True:
        if "$ref" in out:
            return {"anyOf": [{"$ref": out.pop("$ref")}, {"type": "null"}], **out}
        if "type" in out:
            kind = out["type"]
            out["type"] = [*kind, "null"] if isinstance(kind, list) else [kind, "null"]
            if "enum" in out and None not in out["enum"]:
                out["enum"] = [*out["enum"], None]
        else:  # a composite (oneOf, anyOf): it becomes one alternative, its other keys stay
            composite = {k: out.pop(k) for k in ("oneOf", "anyOf", "allOf") if k in out}
            out = {"anyOf": [composite, {"type": "null"}], **out}
    return out


def _refs(node: Any) -> set[str]:
    if isinstance(node, list):
        return set().union(*(_refs(item) for item in node)) if node else set()
    if not isinstance(node, dict):
        return set()
    found = {node["$ref"].rsplit("/", 1)[1]} if isinstance(node.get("$ref"), str) else set()
    return found.union(*(_refs(v) for v in node.values())) if node else found


def extract(spec: dict[str, Any]) -> dict[str, Any]:
    schemas = spec["components"]["schemas"]
    todo, done = list(ROOTS), {}
    while todo:
        name = todo.pop()
        if name in done:
            continue
        done[name] = _clean(schemas[name])
        todo += sorted(_refs(done[name]) - done.keys())
    return {"$comment": COMMENT, "components": {"schemas": dict(sorted(done.items()))}}


if __name__ == "__main__":
    spec = yaml.safe_load(Path(sys.argv[1]).read_text())
    out = Path(__file__).with_name("openai_schemas.json")
    out.write_text(json.dumps(extract(spec), indent=1, sort_keys=True) + "\n")
