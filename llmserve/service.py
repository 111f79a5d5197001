"""Chat completions without a transport: OpenAI request → generation → OpenAI response or chunks."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from llmserve.engine.base import ChatMessage, GenerationParams, Role
from llmserve.errors import InternalError
from llmserve.images import image_bytes
from llmserve.jobs import Event, EventStream, Failed, Finished, Started, TextDelta
from llmserve.keepalive import parse_keep_alive
from llmserve.protocol import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessageIn,
    Choice,
    ChunkChoice,
    Delta,
    ResponseMessage,
    Usage,
)
from llmserve.registry import ModelRegistry

_ROLES: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
}


@dataclass
class RequestStats:
    """What the access log reports about one request; filled in as its events pass."""

    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    first_token_at: float | None = None  # time.monotonic() of the first text

    def observe(self, event: Event) -> None:
        if isinstance(event, Started):
            self.prompt_tokens = event.prompt_tokens
        elif isinstance(event, TextDelta) and self.first_token_at is None:
            self.first_token_at = time.monotonic()
        elif isinstance(event, Finished):
            self.completion_tokens = event.completion_tokens


async def _message(index: int, message: ChatMessageIn, allow_remote: bool) -> ChatMessage:
    """The engine's message; images are fetched or base64-decoded here (decoded by the engine)."""
    urls = dict(message.image_urls())
    if not urls:
        return ChatMessage(_ROLES[message.role], message.text())
    assert isinstance(message.content, list)
    images: list[bytes] = []
    parts: list[str | int] = []
    for i, part in enumerate(message.content):
        if i in urls:
            param = f"messages[{index}].content[{i}].image_url.url"
            images.append(await image_bytes(urls[i], param, allow_remote=allow_remote))
            parts.append(len(images) - 1)
        else:
            parts.append(str(part["text"]))
    return ChatMessage(_ROLES[message.role], message.text(), tuple(images), tuple(parts))


async def to_generation(
    request: ChatCompletionRequest, *, allow_remote_images: bool = False
) -> tuple[list[ChatMessage], GenerationParams]:
    request.check_supported()
    messages = [await _message(i, m, allow_remote_images) for i, m in enumerate(request.messages)]
    params = GenerationParams(
        max_tokens=request.max_completion_tokens or request.max_tokens,
        temperature=1.0 if request.temperature is None else request.temperature,
        top_p=1.0 if request.top_p is None else request.top_p,
        top_k=max(request.top_k or 0, 0),
        seed=request.seed,
        stop=request.stop_strings(),
        presence_penalty=request.presence_penalty or 0.0,
        frequency_penalty=request.frequency_penalty or 0.0,
        repetition_penalty=request.repetition_penalty or 1.0,
        logit_bias=request.logit_biases(),
        min_p=request.min_p or 0.0,
        stop_token_ids=tuple(request.stop_token_ids or ()),
        ignore_eos=request.ignore_eos,
        min_tokens=request.min_tokens,
    )
    return messages, params


async def _first_event(stream: EventStream) -> Started:
    """Waits until the model is loaded and the prompt accepted; raises the error if it failed."""
    try:
        event = await stream.get()
    except BaseException:
        stream.cancel()
        raise
    if isinstance(event, Failed):
        raise event.error
    if not isinstance(event, Started):
        stream.cancel()
        raise InternalError(f"unexpected first event {type(event).__name__}")
    return event


class ChatService:
    def __init__(self, registry: ModelRegistry, *, allow_remote_images: bool = False) -> None:
        self.registry = registry
        self.allow_remote_images = allow_remote_images

    async def _start(self, request: ChatCompletionRequest, stats: RequestStats) -> tuple[str, EventStream]:
        messages, params = await to_generation(request, allow_remote_images=self.allow_remote_images)
        keep_alive = None if request.keep_alive is None else parse_keep_alive(request.keep_alive)
        worker, stream = self.registry.generate(request.model, messages, params, keep_alive)
        stats.model = worker.api_id
        stats.observe(await _first_event(stream))
        return worker.api_id, stream

    async def complete(
        self, request: ChatCompletionRequest, stats: RequestStats | None = None
    ) -> ChatCompletion:
        stats = stats or RequestStats()
        model, stream = await self._start(request, stats)
        parts: list[str] = []
        try:
            async for event in stream.until_done():
                stats.observe(event)
                if isinstance(event, TextDelta):
                    parts.append(event.text)
                elif isinstance(event, Failed):
                    raise event.error
                elif isinstance(event, Finished):
                    return ChatCompletion(
                        id=f"chatcmpl-{uuid.uuid4().hex}",
                        created=int(time.time()),
                        model=model,
                        choices=[
                            Choice(
                                index=0,
                                message=ResponseMessage(content="".join(parts)),
                                finish_reason=event.reason,
                            )
                        ],
                        usage=Usage.of(event.prompt_tokens, event.completion_tokens),
                    )
        finally:
            stream.cancel()
        raise InternalError("the generation ended without a result")

    async def open_stream(
        self, request: ChatCompletionRequest, stats: RequestStats | None = None
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Returns the chunks once generation has started, so that load and prompt errors are raised
        here, before any byte of the response is sent."""
        stats = stats or RequestStats()
        model, stream = await self._start(request, stats)
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        return _chunks(model, stream, include_usage, stats)


async def _chunks(
    model: str, stream: EventStream, include_usage: bool, stats: RequestStats
) -> AsyncGenerator[dict[str, Any], None]:
    """role chunk → content chunks → finish chunk → (usage chunk). A failure mid-way is raised."""
    chunk_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())

    def chunk(choices: list[ChunkChoice], usage: Usage | None = None) -> dict[str, Any]:
        out = ChatCompletionChunk(id=chunk_id, created=created, model=model, choices=choices, usage=usage)
        # With include_usage every chunk carries `usage` (null until the last one), as OpenAI sends it.
        return out.model_dump(exclude=None if include_usage else {"usage"})

    try:
        yield chunk([ChunkChoice(index=0, delta=Delta(role="assistant", content=""))])
        async for event in stream.until_done():
            stats.observe(event)
            if isinstance(event, TextDelta):
                yield chunk([ChunkChoice(index=0, delta=Delta(content=event.text))])
            elif isinstance(event, Failed):
                raise event.error
            elif isinstance(event, Finished):
                yield chunk([ChunkChoice(index=0, delta=Delta(), finish_reason=event.reason)])
                if include_usage:
                    yield chunk([], Usage.of(event.prompt_tokens, event.completion_tokens))
    finally:
        stream.cancel()
