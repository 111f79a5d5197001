"""What the Ollama routes send, checked against Ollama's own OpenAPI description
(data/ollama_openapi.yaml, from github.com/ollama/ollama docs/openapi.yaml; see data/README.md): the
schema's types, and no key the schema does not name at the top level."""

from __future__ import annotations

from typing import Any

import jsonschema
import yaml
from paths import DATA

SPEC = yaml.safe_load((DATA / "ollama_openapi.yaml").read_text())


def assert_ollama(name: str, instance: dict[str, Any]) -> None:
    """Validates `instance` against the schema `name` (ChatResponse, GenerateStreamEvent, ListResponse,
    ...); every key it has must be one the schema names."""
    schema = SPEC["components"]["schemas"][name]
    jsonschema.validate(instance, {"$ref": f"#/components/schemas/{name}", "components": SPEC["components"]})
    unknown = set(instance) - set(schema.get("properties", {}))
    assert not unknown, f"{name}: keys the Ollama API does not name: {sorted(unknown)}"
