"""Ollama's API (`/api/*`): the request bodies of chat, generate, embed, embeddings and show.

Ollama decodes JSON leniently: a key it does not know is ignored, and so it is here (logged by the
service). The keys it knows are typed strictly, as on every llmserve route: `"stream": "yes"` is a 400.
`options` holds the sampling parameters; those llmserve does not use (`num_thread`, `mirostat`, ...)
are ignored with a debug log line.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from llmserve.config.keep_alive import KeepAliveField
from llmserve.protocol.base import Int64, RequestBody


class OllamaBody(RequestBody):
    """Known keys strict, unknown keys ignored (as Ollama's JSON decoding does)."""

    model_config = ConfigDict(extra="ignore")

    def unknown_keys(self) -> list[str]:
        return sorted(self.model_extra or {})


class Options(RequestBody):
    """The `options` llmserve honours; any other option is ignored (`ignored()`)."""

    model_config = ConfigDict(extra="allow")

    temperature: float | None = Field(None, ge=0)
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0, le=1)
    num_predict: int | None = None  # -1: no limit (up to the context), -2: fill the context
    stop: list[str] | None = None
    seed: Int64 | None = None
    repeat_penalty: float | None = Field(None, gt=0)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    num_ctx: int | None = Field(None, ge=1)

    def ignored(self) -> list[str]:
        return sorted(self.model_extra or {})


class ToolFunctionCall(RequestBody):
    model_config = ConfigDict(extra="ignore")

    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolCall(RequestBody):
    model_config = ConfigDict(extra="ignore")

    function: ToolFunctionCall


class Message(RequestBody):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    images: list[str] | None = None  # base64
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = None  # a tool message: the function whose result it is
    thinking: str | None = None  # sent back by clients; not shown to the model


Format = Literal["json", ""] | dict[str, Any] | None


class ChatRequest(OllamaBody):
    model: str
    messages: list[Message] = Field(default_factory=list)
    tools: list[dict[str, Any]] | None = None
    format: Format = None
    options: Options | None = None
    stream: bool = True
    keep_alive: KeepAliveField = None
    think: bool | str | None = None  # accepted; no effect


class GenerateRequest(OllamaBody):
    model: str
    prompt: str = ""
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    raw: bool = False
    images: list[str] | None = None
    format: Format = None
    options: Options | None = None
    stream: bool = True
    keep_alive: KeepAliveField = None
    context: list[int] | None = None  # Ollama's deprecated conversation state: refused when not empty
    think: bool | str | None = None


class EmbedRequest(OllamaBody):
    model: str
    input: str | list[str] = ""
    truncate: bool = True
    dimensions: int | None = Field(None, ge=1)
    options: Options | None = None
    keep_alive: KeepAliveField = None


class EmbeddingsRequest(OllamaBody):
    """The legacy `/api/embeddings`: one `prompt`, one `embedding`."""

    model: str
    prompt: str = ""
    options: Options | None = None
    keep_alive: KeepAliveField = None


class ShowRequest(OllamaBody):
    model: str | None = None
    name: str | None = None  # the older spelling of `model`
    verbose: bool = False

    @model_validator(mode="after")
    def _named(self) -> ShowRequest:
        if not (self.model or self.name):
            raise ValueError("'model' is required")
        return self

    @property
    def model_name(self) -> str:
        return self.model or self.name or ""
