"""Anthropic's Messages API wire types (pydantic v2), shaped after the `anthropic` SDK's own types
(`MessageCreateParams`, `Message`, `RawMessageStreamEvent`): the request with its content blocks, tools
and tool_choice, and the message and usage of a response. Imports nothing heavy; requests parse with
`protocol.base.parse_request`, strict as every request type is.

Fields the Claude clients send that change nothing here (`cache_control`, `citations`, `metadata`,
`thinking`, `service_tier`, `context_management`) are accepted; anything else unknown is a 400.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from llmserve.protocol.base import RequestBody

StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]


class CacheControlled(RequestBody):
    cache_control: dict[str, Any] | None = None  # prompt caching hints: accepted, nothing is cached


class TextBlock(CacheControlled):
    type: Literal["text"]
    text: str
    citations: list[dict[str, Any]] | None = None  # accepted; llmserve cites nothing


class Base64Source(RequestBody):
    type: Literal["base64"]
    media_type: Literal["image/jpeg", "image/png", "image/gif", "image/webp"]
    data: str


class URLSource(RequestBody):
    type: Literal["url"]
    url: str


class ImageBlock(CacheControlled):
    type: Literal["image"]
    source: Annotated[Base64Source | URLSource, Field(discriminator="type")]

    def url(self) -> str:
        """The image as the chat service takes it: a data URL, or the http(s) URL."""
        source = self.source
        if isinstance(source, URLSource):
            return source.url
        return f"data:{source.media_type};base64,{source.data}"


class ToolUseBlock(CacheControlled):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


class ToolResultBlock(CacheControlled):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[Annotated[TextBlock | ImageBlock, Field(discriminator="type")]] | None = None
    is_error: bool | None = None


class ThinkingBlock(RequestBody):
    """A reasoning block a client sends back from an earlier turn: accepted and left out of the prompt."""

    type: Literal["thinking"]
    thinking: str
    signature: str | None = None


class RedactedThinkingBlock(RequestBody):
    type: Literal["redacted_thinking"]
    data: str


ContentBlock = Annotated[
    TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock | RedactedThinkingBlock,
    Field(discriminator="type"),
]


class OutputConfig(RequestBody):
    effort: str | None = None  # accepted; no effect
    format: OutputFormat | None = None  # structured output: constrained decoding, as chat's json_schema


class MessageParam(RequestBody):
    role: Literal["user", "assistant", "system"]  # Claude Code 2.1 puts system turns among the messages
    content: str | list[ContentBlock]
    output_config: OutputConfig | None = None  # Claude Code 2.1 sets `effort` on its system turns: no effect


class ToolParam(RequestBody):
    """A tool as `tools` lists it: a custom tool (`input_schema`), or one of Anthropic's server tools
    (`type` such as `web_search_20250305`), which llmserve does not run and leaves out with a warning."""

    model_config = ConfigDict(extra="allow")  # server tools carry fields of their own

    name: str
    type: str | None = None
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    cache_control: dict[str, Any] | None = None

    @property
    def custom(self) -> bool:
        return self.type in (None, "custom")


class ToolChoice(RequestBody):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Metadata(RequestBody):
    user_id: str | None = None


class OutputFormat(RequestBody):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class PromptRequest(RequestBody):
    """What `/v1/messages` and `/v1/messages/count_tokens` share: the prompt, its tools, and the fields
    that change nothing here (accepted so that current SDKs and Claude Code are not refused)."""

    model: str = Field(min_length=1)
    messages: list[MessageParam] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    tools: list[ToolParam] | None = None
    tool_choice: ToolChoice | None = None
    output_config: OutputConfig | None = None
    # Accepted, no effect on the output.
    thinking: dict[str, Any] | None = None  # extended thinking: the model answers without it
    cache_control: dict[str, Any] | None = None
    context_management: dict[str, Any] | None = None
    container: Any = None
    diagnostics: Any = None
    inference_geo: str | None = None
    mcp_servers: list[dict[str, Any]] | None = None
    service_tier: str | None = None
    speed: str | None = None
    user_profile_id: str | None = None
    workspace_id: str | None = None


class MessagesRequest(PromptRequest):
    max_tokens: int = Field(ge=1)
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    stop_sequences: list[Annotated[str, Field(min_length=1)]] | None = None
    stream: bool = False
    metadata: Metadata | None = None  # accepted; no effect


class CountTokensRequest(PromptRequest):
    """`POST /v1/messages/count_tokens`: the prompt fields (no `max_tokens`, no sampling)."""


# ---- responses ----


class Usage(BaseModel):
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int = 0  # llmserve keeps no prompt cache: always 0
    cache_read_input_tokens: int = 0


class Message(BaseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    model: str
    content: list[dict[str, Any]]  # {"type": "text", "text"} and {"type": "tool_use", "id", "name", "input"}
    stop_reason: StopReason | None
    stop_sequence: str | None = None
    usage: Usage
