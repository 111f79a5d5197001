"""OpenAI's legacy completions wire types: the request of POST /v1/completions (raw prompts, no chat
template). Imports nothing heavy; requests parse with `protocol.base.parse_request`."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from llmserve.errors import InvalidRequest
from llmserve.protocol.openai_generation import SamplingRequest

Prompt = str | tuple[int, ...]


class CompletionRequest(SamplingRequest):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(default=16, ge=0)  # OpenAI's default for this endpoint
    n: int = Field(default=1, ge=1, le=128)
    logprobs: int | None = Field(default=None, ge=0, le=5)
    echo: bool = False
    best_of: int | None = Field(default=None, ge=1)
    suffix: str | None = None
    user: str | None = None  # accepted, no effect

    def prompts(self) -> list[Prompt]:
        value = self.prompt
        if isinstance(value, str):
            items: list[Any] = [value]
        elif value and all(isinstance(v, int) for v in value):
            items = [tuple(value)]
        else:
            items = [v if isinstance(v, str | int) else tuple(v) for v in value]
        if not items or any(isinstance(i, int) for i in items):
            raise InvalidRequest(
                "'prompt' must be a string, strings, token ids or lists of them", param="prompt"
            )
        if any(not i for i in items):
            raise InvalidRequest("'prompt' must not be empty", param="prompt")
        return items
