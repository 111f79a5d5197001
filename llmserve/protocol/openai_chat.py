"""OpenAI's chat completions wire types (pydantic v2), shaped after OpenAI's openapi.yaml: the request
(messages, content parts, tools, response_format) and the completion and its stream chunks. Imports
nothing heavy; requests parse with `protocol.base.parse_request`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from llmserve.config.keep_alive import KeepAliveField
from llmserve.errors import InvalidRequest
from llmserve.protocol.base import RequestBody
from llmserve.protocol.openai_generation import SamplingRequest, Usage

FinishReasonOut = Literal["stop", "length", "tool_calls"]


class TextPart(RequestBody):
    type: Literal["text"]
    text: str


class ImageURL(RequestBody):
    url: str
    detail: Literal["auto", "low", "high"] | None = None  # accepted; the model's processor decides


class ImagePart(RequestBody):
    type: Literal["image_url"]
    image_url: ImageURL


class ToolCallIn(RequestBody):
    id: str
    type: Literal["function"]
    function: dict[str, Any]

    @field_validator("function")
    @classmethod
    def _named(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(value.get("name"), str) or not isinstance(value.get("arguments", ""), str):
            raise ValueError("a tool call's function needs a 'name' and 'arguments' (a JSON string)")
        return value


class ChatMessageIn(RequestBody):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None  # an assistant's earlier calls
    tool_call_id: str | None = None  # a tool message: the call it answers

    @model_validator(mode="after")
    def _tool_fields(self) -> ChatMessageIn:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a 'tool' message needs 'tool_call_id'")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only 'assistant' messages carry 'tool_calls'")
        return self

    @field_validator("content")
    @classmethod
    def _known_parts(cls, value: str | list[dict[str, Any]] | None, info: ValidationInfo) -> Any:
        if isinstance(value, list):
            user = info.data.get("role") == "user"
            for part in value:
                kind = part.get("type")
                if kind == "text":
                    TextPart.model_validate(part)
                elif kind == "image_url" and user:
                    ImagePart.model_validate(part)
                else:
                    allowed = "'text' and 'image_url'" if user else "'text'"
                    raise ValueError(f"content part type {kind!r} is not supported here; use {allowed} parts")
        return value

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(str(part["text"]) for part in self.content if part["type"] == "text")

    def image_urls(self) -> list[tuple[int, str]]:
        """(index of the part, URL) of each image part."""
        if not isinstance(self.content, list):
            return []
        return [(i, p["image_url"]["url"]) for i, p in enumerate(self.content) if p["type"] == "image_url"]


# Parameters OpenAI defines that llmserve does not implement yet, with the values that change nothing.
# Any other value is a 400 naming the parameter, never a silent ignore.
UNSUPPORTED_UNLESS: dict[str, tuple[Any, ...]] = {
    "functions": (None, []),
    "function_call": (None, "none", "auto"),
    "modalities": (None, ["text"]),
    "audio": (None,),
    "prediction": (None,),
    "reasoning_effort": (None,),
    "web_search_options": (None,),
    "verbosity": (None,),
}


class JsonSchemaFormat(RequestBody):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None
    description: str | None = None


class ResponseFormat(RequestBody):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_when_needed(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("'json_schema' is required with type 'json_schema', and only then")
        return self


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessageIn] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    n: int | None = Field(default=None, ge=1, le=128)
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    # vLLM's and mistral.rs's extensions
    stop_token_ids: list[Annotated[int, Field(ge=0)]] | None = None
    ignore_eos: bool = False
    min_tokens: int = Field(default=0, ge=0)
    keep_alive: KeepAliveField = None  # Ollama's: how long the model stays loaded after this

    # Accepted, no effect on the output.
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    # Defined by OpenAI, not implemented yet: see UNSUPPORTED_UNLESS.
    functions: Any = None
    function_call: Any = None
    modalities: Any = None
    audio: Any = None
    prediction: Any = None
    reasoning_effort: Any = None
    web_search_options: Any = None
    verbosity: Any = None

    def check_supported(self) -> None:
        for name, neutral in UNSUPPORTED_UNLESS.items():
            value = getattr(self, name)
            if not any(value == ok and type(value) is type(ok) for ok in neutral):
                raise InvalidRequest(f"'{name}' = {value!r} is not supported by llmserve yet", param=name)
        if self.top_logprobs is not None and not self.logprobs:
            raise InvalidRequest("'top_logprobs' needs 'logprobs': true", param="top_logprobs")
        self.check_stream_options()


# ---- responses ----


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: None = None
    tool_calls: list[dict[str, Any]] | None = None  # sent only when the model called tools

    @model_serializer
    def _without_empty_calls(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role, "content": self.content, "refusal": self.refusal}
        if self.tool_calls:
            out["tool_calls"] = self.tool_calls
        return out


class ChoiceLogprobs(BaseModel):
    content: list[dict[str, Any]] | None  # {"token", "logprob", "bytes", "top_logprobs": [...]} per token
    refusal: None = None


class Choice(BaseModel):
    index: int
    message: ResponseMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReasonOut


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None  # {"index", "id", "type", "function"} per call

    @model_serializer
    def _only_set(self) -> dict[str, Any]:
        pairs = (("role", self.role), ("content", self.content), ("tool_calls", self.tool_calls))
        return {k: v for k, v in pairs if v is not None}


class ChunkChoice(BaseModel):
    index: int
    delta: Delta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReasonOut | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
