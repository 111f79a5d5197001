"""Anthropic's published description, as the `anthropic` SDK ships it (tests/data/anthropic/SOURCE.md):
what llmserve sends on /v1/messages is validated strictly with the SDK's own pydantic types."""

from __future__ import annotations

from typing import Any

import pydantic
from anthropic.types import Message, MessageTokensCount, RawMessageStreamEvent

_EVENT: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(RawMessageStreamEvent)


def _plain(value: Any) -> Any:
    return (
        value.model_dump(mode="json", exclude_unset=True) if isinstance(value, pydantic.BaseModel) else value
    )


def assert_message(value: Any) -> None:
    """`value` (a dict, or what the SDK parsed) is an Anthropic `Message`, checked strictly."""
    Message.model_validate(_plain(value), strict=True)


def assert_event(value: Any) -> None:
    _EVENT.validate_python(_plain(value), strict=True)


def assert_count(value: Any) -> None:
    MessageTokensCount.model_validate(_plain(value), strict=True)
