"""What the server sends, checked: bodies against OpenAI's schemas (data/openai_schemas.json, from
openapi.yaml) and KServe's (data/kserve_rest_predict_v2.yaml), and the payloads of an SSE body."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import yaml
from paths import DATA

_SCHEMAS = json.loads((DATA / "openai_schemas.json").read_text())
SPEC = yaml.safe_load((DATA / "kserve_rest_predict_v2.yaml").read_text())


def assert_schema(name: str, instance: Any) -> None:
    """Validates `instance` against OpenAI's schema `name` (from openapi.yaml)."""
    schema = {"$ref": f"#/components/schemas/{name}", "components": _SCHEMAS["components"]}
    jsonschema.validate(instance, schema)


def assert_kserve(name: str, instance: Any) -> None:
    """Validates `instance` against KServe's schema `name` (from rest_predict_v2.yaml)."""
    schema = {"$ref": f"#/components/schemas/{name}", "components": SPEC["components"]}
    jsonschema.validate(instance, schema)


def sse_data(body: str) -> list[str]:
    """The `data:` payloads of an SSE body, in order; fails on anything but data events and pings."""
    payloads = []
    for block in body.split("\n\n"):
        if not block.strip() or block.startswith(":"):
            continue
        assert block.startswith("data: "), block
        payloads.append(block[len("data: ") :])
    return payloads
