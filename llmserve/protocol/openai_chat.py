"""OpenAI wire types (pydantic v2), shaped after OpenAI's openapi.yaml. Imports nothing heavy.

Requests are parsed with `parse_request`, which turns every validation problem into one
`InvalidRequest` whose `param` names the field (`messages[0].content`). Request types are strict, as
OpenAI is: `"stream": "yes"`, `"n": "2"` or `"temperature": "0.5"` is a 400, never coerced; only a JSON
integer where a number is expected is taken (`"temperature": 1`).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from llmserve.config.keep_alive import KeepAliveField
from llmserve.engine.base import GenerationParams
from llmserve.errors import InvalidRequest

FinishReasonOut = Literal["stop", "length", "tool_calls"]
M = TypeVar("M", bound=BaseModel)


# A 64-bit signed integer (OpenAI's bounds for `seed`): more would overflow the engine's generator.
INT64_MAX = 2**63 - 1
Int64 = Annotated[int, Field(ge=-INT64_MAX - 1, le=INT64_MAX)]


class _Request(BaseModel):
    """Base of every request body type: unknown keys and lax types (a string for a bool or a number, a
    number for a bool) are errors. Subclasses that set `model_config` keep both (pydantic merges it)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class TextPart(_Request):
    type: Literal["text"]
    text: str


class ImageURL(_Request):
    url: str
    detail: Literal["auto", "low", "high"] | None = None  # accepted; the model's processor decides


class ImagePart(_Request):
    type: Literal["image_url"]
    image_url: ImageURL


class ToolCallIn(_Request):
    id: str
    type: Literal["function"]
    function: dict[str, Any]

    @field_validator("function")
    @classmethod
    def _named(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(value.get("name"), str) or not isinstance(value.get("arguments", ""), str):
            raise ValueError("a tool call's function needs a 'name' and 'arguments' (a JSON string)")
        return value


class ChatMessageIn(_Request):
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


class StreamOptions(_Request):
    include_usage: bool = False
    include_obfuscation: bool | None = None  # accepted; llmserve never obfuscates


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


class JsonSchemaFormat(_Request):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None
    description: str | None = None


class ResponseFormat(_Request):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_when_needed(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("'json_schema' is required with type 'json_schema', and only then")
        return self


_DEFAULTED = ("temperature", "top_p", "top_k", "repetition_penalty", "min_p")  # the model may set these


class SamplingRequest(_Request):
    """What chat and (legacy) completions requests share: the model, streaming and sampling."""

    model: str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=-1)  # vLLM's extension; -1 or 0: no cut
    # vLLM's and mistral.rs's extensions
    repetition_penalty: float | None = Field(default=None, gt=0, le=10)
    min_p: float | None = Field(default=None, ge=0, le=1)
    stop: str | list[str] | None = None
    seed: Int64 | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = None

    @field_validator("stop")
    @classmethod
    def _stop_strings(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and any(not s for s in value):
            raise ValueError("stop strings must not be empty")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _token_ids(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for key in value or {}:
            if not key.isdigit():
                raise ValueError(f"keys are token ids (whole numbers as strings), not {key!r}")
        return value

    def logit_biases(self) -> tuple[tuple[int, float], ...]:
        return tuple((int(k), float(v)) for k, v in (self.logit_bias or {}).items())

    def stop_strings(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def sampling(self) -> GenerationParams:
        """The generation parameters these fields set (the endpoints add their own with `replace`). A
        field left out (or null) gets the API's default here and is marked `omitted`, so that the model's
        own default replaces it (sampling_defaults.py)."""
        return GenerationParams(
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            top_k=max(self.top_k or 0, 0),
            repetition_penalty=1.0 if self.repetition_penalty is None else self.repetition_penalty,
            min_p=0.0 if self.min_p is None else self.min_p,
            seed=self.seed,
            stop=self.stop_strings(),
            presence_penalty=self.presence_penalty or 0.0,
            frequency_penalty=self.frequency_penalty or 0.0,
            logit_bias=self.logit_biases(),
            omitted=frozenset(name for name in _DEFAULTED if getattr(self, name) is None),
        )

    def check_stream_options(self) -> None:
        if self.stream_options is not None and not self.stream:
            raise InvalidRequest(
                "'stream_options' is only allowed when 'stream' is true", param="stream_options"
            )


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


# The tags pydantic adds to an error's location for each member of a union (`stop.str`,
# `input.list[int]`, `content.TextPart`) and for validators (`function-after[...]`): not fields.
_TAG = re.compile(r"^(str|int|float|bool|none|bytes|[A-Z]\w*)$|[\[-]")


def _param(loc: tuple[int | str, ...], *, key_last: bool = False) -> str:
    """The field at `loc` as `messages[0].content`; `key_last`: the last part is a key of the body's
    (an unknown parameter), whatever it looks like."""
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, str) and _TAG.search(part) and not (key_last and i == len(loc) - 1):
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse_request(model: type[M], body: Any) -> M:
    """Validate a JSON body; the first problem becomes an `InvalidRequest` with `param` set."""
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        error = exc.errors()[0]
        param = _param(error["loc"], key_last=error["type"] == "extra_forbidden") or None
        if error["type"] == "extra_forbidden":
            raise InvalidRequest(f"unknown parameter '{param}'", param=param) from None
        if error["type"] == "missing":
            raise InvalidRequest(f"missing required parameter '{param}'", param=param) from None
        message = str(error["msg"]).removeprefix("Value error, ")
        raise InvalidRequest(f"invalid value for '{param}': {message}", param=param) from None


# ---- responses ----


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> Usage:
        return cls(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )


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
