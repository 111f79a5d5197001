"""Writes anthropic_schemas.json: JSON schemas of the Messages API's responses, generated from the
`anthropic` SDK's own pydantic types (the SDK is generated from Anthropic's OpenAPI description, which
is not published as a file). Run: python3 tests/data/make_anthropic_schemas.py"""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

import pydantic
from anthropic.types import ErrorResponse, Message, MessageTokensCount, RawMessageStreamEvent

TYPES = {
    "Message": Message,
    "RawMessageStreamEvent": RawMessageStreamEvent,
    "ErrorResponse": ErrorResponse,
    "MessageTokensCount": MessageTokensCount,
}

if __name__ == "__main__":
    out = {
        "source": f"anthropic (PyPI) {version('anthropic')}, anthropic.types, pydantic TypeAdapter.json_schema()",
        "schemas": {name: pydantic.TypeAdapter(t).json_schema() for name, t in TYPES.items()},
    }
    path = Path(__file__).with_name("anthropic_schemas.json")
    path.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
