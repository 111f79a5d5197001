"""OpenAI's Responses API wire types (pydantic v2), shaped after openapi.yaml's `CreateResponse`: the
request, its tools, `text.format` and the items of `input`. Every parameter `CreateResponse` defines is
a field here, so that an unknown key is a 400 as on chat completions, and each is either honoured,
accepted and ignored (logged when it would change the answer) or refused (`REFUSED_UNLESS`).
Imports nothing heavy; requests parse with `protocol.base.parse_request`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator

from llmserve.errors import InvalidRequest
from llmserve.protocol.base import RequestBody

ITEM_TYPES = ("message", "function_call", "function_call_output", "reasoning")


class FunctionToolIn(RequestBody):
    """A function tool in the Responses shape: flat, not nested under `function` as in chat."""

    model_config = ConfigDict(extra="ignore")  # defer_loading, allowed_callers, output_schema, ...

    type: Literal["function"]
    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    def as_chat(self) -> dict[str, Any]:
        function: dict[str, Any] = {"name": self.name}
        if self.description is not None:
            function["description"] = self.description
        if self.parameters is not None:
            function["parameters"] = self.parameters
        if self.strict is not None:
            function["strict"] = self.strict
        return {"type": "function", "function": function}

    def echo(self) -> dict[str, Any]:
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters,
            "strict": self.strict,
        }


class TextFormat(RequestBody):
    """`text.format`: `text`, `json_object`, or `json_schema` with its fields flat (not nested)."""

    type: Literal["text", "json_object", "json_schema"]
    name: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None
    description: str | None = None

    model_config = ConfigDict(populate_by_name=True)

    def as_response_format(self) -> dict[str, Any] | None:
        """Chat's `response_format` for the same constraint."""
        if self.type == "text":
            return None
        if self.type == "json_object":
            return {"type": "json_object"}
        if self.name is None or self.schema_ is None:
            raise InvalidRequest("a 'json_schema' format needs 'name' and 'schema'", param="text.format")
        inner: dict[str, Any] = {"name": self.name, "schema": self.schema_}
        if self.strict is not None:
            inner["strict"] = self.strict
        if self.description is not None:
            inner["description"] = self.description
        return {"type": "json_schema", "json_schema": inner}

    def echo(self) -> dict[str, Any]:
        out = self.model_dump(by_alias=True, exclude_none=True)
        if self.type == "json_schema":
            out.setdefault("strict", False)
        return out


class TextParam(RequestBody):
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None  # accepted; the model decides its length


class ReasoningParam(RequestBody):
    """Accepted and ignored: llmserve's models do not expose separate reasoning."""

    model_config = ConfigDict(extra="ignore")

    effort: str | None = None
    summary: str | None = None
    generate_summary: str | None = None


class StreamOptionsParam(RequestBody):
    include_obfuscation: bool | None = None  # accepted; llmserve never obfuscates


# Parameters `CreateResponse` defines that llmserve refuses unless they have the value that changes
# nothing: a 400 naming the parameter, never a silent ignore.
REFUSED_UNLESS: dict[str, tuple[Any, ...]] = {
    "background": (None, False),
    "conversation": (None,),
    "prompt": (None,),
    "context_management": (None,),
    "moderation": (None,),
    "top_logprobs": (None, 0),
}


class ResponsesRequest(RequestBody):
    """`POST /v1/responses`."""

    model: str | None = None
    input: str | list[dict[str, Any]] | None = None
    instructions: str | None = None
    previous_response_id: str | None = None
    stream: bool = False
    stream_options: StreamOptionsParam | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_output_tokens: int | None = Field(default=None, ge=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: TextParam | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    # Accepted; no effect on the output (see docs/api.md).
    user: str | None = None
    reasoning: ReasoningParam | None = None
    include: list[str] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    max_tool_calls: int | None = Field(default=None, ge=1)
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    prompt_cache_options: dict[str, Any] | None = None
    safety_identifier: str | None = None
    service_tier: str | None = None
    client_metadata: dict[str, str] | None = None  # Codex CLI 0.171 sends its turn's metadata here
    # Refused unless neutral: see REFUSED_UNLESS.
    background: bool | None = None
    conversation: Any = None
    prompt: Any = None
    context_management: Any = None
    moderation: Any = None
    top_logprobs: int | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None and (
            len(value) > 16 or any(len(k) > 64 or len(v) > 512 for k, v in value.items())
        ):
            raise ValueError("at most 16 pairs, keys of at most 64 characters, values of at most 512")
        return value

    def check_supported(self) -> None:
        for name, neutral in REFUSED_UNLESS.items():
            value = getattr(self, name)
            if not any(value == ok and type(value) is type(ok) for ok in neutral):
                raise InvalidRequest(f"'{name}' = {value!r} is not supported by llmserve", param=name)

    def input_items(self) -> list[dict[str, Any]]:
        """`input` as a list of items (a string is one user message)."""
        if self.input is None:
            return []
        if isinstance(self.input, str):
            return [{"type": "message", "role": "user", "content": self.input}]
        return self.input


class ItemsQuery(RequestBody):
    """`GET /v1/responses/{id}/input_items`'s query."""

    limit: int = Field(default=20, ge=1, le=100)
    order: Literal["asc", "desc"] = "desc"
    after: str | None = None
    include: list[str] | None = None
