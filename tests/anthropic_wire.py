"""Anthropic's published description, as the `anthropic` SDK 2.17.0 ships it (tests/data/README.md):
what llmserve sends on /v1/messages is validated against the JSON schemas generated from the SDK's types
(data/anthropic_schemas.json) and, strictly, with the SDK's pydantic types themselves."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pydantic
from anthropic.types import ErrorResponse, Message, MessageTokensCount, RawMessageStreamEvent
from paths import DATA

_SCHEMAS = json.loads((DATA / "anthropic_schemas.json").read_text())["schemas"]
_EVENT: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(RawMessageStreamEvent)


def _plain(value: Any) -> Any:
    return (
        value.model_dump(mode="json", exclude_unset=True) if isinstance(value, pydantic.BaseModel) else value
    )


def assert_message(value: Any) -> None:
    """`value` (a dict, or what the SDK parsed) is an Anthropic `Message`."""
    body = _plain(value)
    jsonschema.validate(body, _SCHEMAS["Message"])
    Message.model_validate(body, strict=True)


def assert_event(value: Any) -> None:
    """A stream event's data: `ping` (which the SDK's event union leaves out), `error`, or one of
    `RawMessageStreamEvent`."""
    body = _plain(value)
    if body.get("type") == "ping":
        assert body == {"type": "ping"}
    elif body.get("type") == "error":
        assert_error(body)
    else:
        jsonschema.validate(body, _SCHEMAS["RawMessageStreamEvent"])
        _EVENT.validate_python(body, strict=True)


def assert_error(value: Any) -> None:
    body = _plain(value)
    jsonschema.validate(body, _SCHEMAS["ErrorResponse"])
    ErrorResponse.model_validate(body, strict=True)


def assert_count(value: Any) -> None:
    body = _plain(value)
    jsonschema.validate(body, _SCHEMAS["MessageTokensCount"])
    MessageTokensCount.model_validate(body, strict=True)
