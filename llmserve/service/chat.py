"""Chat completions without a transport: OpenAI request → generation → OpenAI response or chunks."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass, replace
from typing import Any

from llmserve.config.keep_alive import parse_keep_alive
from llmserve.engine.base import ChatMessage, Constraint, GenerationParams, Role
from llmserve.errors import InvalidRequest
from llmserve.models.jobs import EventStream, Failed, Finished, TextDelta
from llmserve.models.registry import ModelRegistry
from llmserve.protocol.openai_chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessageIn,
    Choice,
    ChoiceLogprobs,
    ChunkChoice,
    Delta,
    FinishReasonOut,
    ResponseFormat,
    ResponseMessage,
)
from llmserve.protocol.openai_generation import Usage
from llmserve.service.images import image_bytes
from llmserve.service.sampling import sampling_params
from llmserve.service.streams import RequestStats, collect, merged, seeded, start_streams
from llmserve.service.tools import ToolPlan, forcing, parse_calls, plan

_ROLES: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
}


async def _message(index: int, message: ChatMessageIn, allow_remote: bool) -> ChatMessage:
    """The engine's message; images are fetched or base64-decoded here (decoded by the engine)."""
    urls = dict(message.image_urls())
    if not urls:
        calls = tuple(call.model_dump() for call in message.tool_calls or ())
        return ChatMessage(
            _ROLES[message.role], message.text(), tool_calls=calls, tool_call_id=message.tool_call_id
        )
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


def constraint_of(response_format: ResponseFormat | None) -> Constraint | None:
    """The grammar `response_format` asks for; an invalid JSON schema is a 400 here, before queueing."""
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object":
        constraint = Constraint.json_object()
    else:
        assert response_format.json_schema is not None
        constraint = Constraint.json_schema(response_format.json_schema.schema_ or {})
    from llmserve.engine.grammar import compiled  # llguidance; no torch

    return compiled(constraint)


async def to_generation(
    request: ChatCompletionRequest, *, allow_remote_images: bool = False
) -> tuple[list[ChatMessage], GenerationParams, ToolPlan | None]:
    request.check_supported()
    tool_plan = plan(request.tools, request.tool_choice, request.parallel_tool_calls)
    constraint = constraint_of(request.response_format)
    if tool_plan is not None and tool_plan.forced:
        if constraint is not None:
            raise InvalidRequest(
                "a forced tool call and 'response_format' exclude each other", param="tool_choice"
            )
        from llmserve.engine.grammar import compiled

        constraint = compiled(forcing(tool_plan))  # the functions' parameter schemas
    messages = [await _message(i, m, allow_remote_images) for i, m in enumerate(request.messages)]
    sampling = sampling_params(request)
    max_tokens = request.max_completion_tokens or request.max_tokens
    params = replace(
        sampling,
        constraint=constraint,
        logprobs=(request.top_logprobs or 0) if request.logprobs else None,
        max_tokens=max_tokens,
        omitted=sampling.omitted | ({"max_tokens"} if max_tokens is None else set()),
        stop_token_ids=tuple(request.stop_token_ids or ()),
        ignore_eos=request.ignore_eos,
        min_tokens=request.min_tokens,
    )
    return messages, params, tool_plan


class ChatService:
    def __init__(self, registry: ModelRegistry, *, allow_remote_images: bool = False) -> None:
        self.registry = registry
        self.allow_remote_images = allow_remote_images

    async def _start(
        self, request: ChatCompletionRequest, stats: RequestStats
    ) -> tuple[str, list[EventStream], int, ToolPlan | None]:
        """Queues the `n` choices (choice i with seed + i) and waits until each has started; returns the
        model's name, the streams and the prompt's token count. A failure cancels every choice."""
        messages, params, tool_plan = await to_generation(
            request, allow_remote_images=self.allow_remote_images
        )
        tools = None if tool_plan is None else tool_plan.tools
        keep_alive = None if request.keep_alive is None else parse_keep_alive(request.keep_alive)
        model, streams, started = await start_streams(
            request.n or 1,
            lambda i: self.registry.generate(
                request.model, messages, seeded(params, i), keep_alive, tools=tools, tenant=stats.tenant
            ),
        )
        stats.model = model
        stats.observe(started[0])
        return model, streams, started[0].prompt_tokens, tool_plan

    async def complete(
        self, request: ChatCompletionRequest, stats: RequestStats | None = None
    ) -> ChatCompletion:
        stats = stats or RequestStats()
        model, streams, prompt_tokens, tool_plan = await self._start(request, stats)
        try:
            results = await asyncio.gather(*(collect(stream, stats) for stream in streams))
        finally:
            for stream in streams:
                stream.cancel()
        choices = []
        for i, (text, entries, finished) in enumerate(results):
            content, calls = (text, []) if tool_plan is None else parse_calls(text, tool_plan)
            choices.append(
                Choice(
                    index=i,
                    message=ResponseMessage(content=content, tool_calls=calls or None),
                    logprobs=ChoiceLogprobs(content=entries) if request.logprobs else None,
                    finish_reason="tool_calls" if calls else finished.reason,
                )
            )
        generated = sum(finished.completion_tokens for _, _, finished in results)
        stats.completion_tokens = generated
        return ChatCompletion(
            id=f"chatcmpl-{uuid.uuid4().hex}",
            created=int(time.time()),
            model=model,
            choices=choices,
            usage=Usage.of(prompt_tokens, generated),
        )

    async def open_stream(
        self, request: ChatCompletionRequest, stats: RequestStats | None = None
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Returns the chunks once generation has started, so that load and prompt errors are raised
        here, before any byte of the response is sent."""
        run = await self.run(request, stats)
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        return _chunks(run, include_usage, bool(request.logprobs))

    async def run(self, request: ChatCompletionRequest, stats: RequestStats | None = None) -> ChatRun:
        """Starts the request's choices and returns them as API-neutral events (what every chat-like
        API formats in its own way: chat completions, Responses, Anthropic Messages, Ollama). Load and
        prompt errors are raised here, before the first event."""
        stats = stats or RequestStats()
        model, streams, prompt_tokens, tool_plan = await self._start(request, stats)
        return ChatRun(
            model, prompt_tokens, len(streams), _choice_events(streams, stats, tool_plan), tuple(streams)
        )


@dataclass(frozen=True)
class TextPiece:
    """Text of choice `index` as it is generated (with tools offered, held until the choice ends)."""

    index: int
    text: str
    logprobs: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class ChoiceEnd:
    """Choice `index` has ended: `content` is its text not yet sent as pieces (the held text when tools
    were offered, with the calls taken out), `calls` its tool calls in OpenAI's `tool_calls` form, and
    `reason` why it ended (`tool_calls` when it called)."""

    index: int
    content: str | None
    calls: tuple[dict[str, Any], ...]
    reason: FinishReasonOut
    completion_tokens: int
    stop_sequence: str | None = None  # the stop string that ended it, if one did


ChoiceEvent = TextPiece | ChoiceEnd


@dataclass(frozen=True)
class ChatRun:
    """A started chat request: the model's name, the prompt's tokens, the number of choices, and their
    events as they come. Consuming `events` to its end (or closing it) cancels what is left."""

    model: str
    prompt_tokens: int
    choices: int
    events: AsyncGenerator[ChoiceEvent, None]
    streams: tuple[EventStream, ...] = ()

    def cancel(self) -> None:
        """Ends the choices, whether or not `events` was ever read."""
        for stream in self.streams:
            stream.cancel()


async def _choice_events(
    streams: list[EventStream], stats: RequestStats, tool_plan: ToolPlan | None
) -> AsyncGenerator[ChoiceEvent, None]:
    """The choices' pieces and ends as they come; a failure mid-way is raised. With tools offered, a
    choice's text is held until its end, then parsed into content and calls."""
    held: dict[int, list[str]] = {i: [] for i in range(len(streams))}
    generated = 0
    try:
        async for index, event in merged(streams):
            stats.observe(event)
            if isinstance(event, TextDelta) and tool_plan is not None:
                held[index].append(event.text)
            elif isinstance(event, TextDelta):
                yield TextPiece(index, event.text, tuple(event.logprobs))
            elif isinstance(event, Failed):
                raise event.error
            elif isinstance(event, Finished):
                generated += event.completion_tokens
                content: str | None = None
                calls: list[dict[str, Any]] = []
                if tool_plan is not None:
                    content, calls = parse_calls("".join(held[index]), tool_plan)
                reason: FinishReasonOut = "tool_calls" if calls else event.reason
                yield ChoiceEnd(
                    index, content, tuple(calls), reason, event.completion_tokens, event.stop_sequence
                )
        stats.completion_tokens = generated
    finally:
        for stream in streams:
            stream.cancel()


async def _chunks(
    run: ChatRun, include_usage: bool, with_logprobs: bool
) -> AsyncGenerator[dict[str, Any], None]:
    """Per choice: role chunk → content chunks → (held content, tool calls) → finish chunk; then
    (usage chunk)."""
    chunk_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())

    def chunk(choices: list[ChunkChoice], usage: Usage | None = None) -> dict[str, Any]:
        out = ChatCompletionChunk(id=chunk_id, created=created, model=run.model, choices=choices, usage=usage)
        # With include_usage every chunk carries `usage` (null until the last one), as OpenAI sends it.
        return out.model_dump(exclude=None if include_usage else {"usage"})

    generated = 0
    try:
        for index in range(run.choices):
            yield chunk([ChunkChoice(index=index, delta=Delta(role="assistant", content=""))])
        async for event in run.events:
            if isinstance(event, TextPiece):
                logprobs = ChoiceLogprobs(content=list(event.logprobs)) if with_logprobs else None
                yield chunk(
                    [ChunkChoice(index=event.index, delta=Delta(content=event.text), logprobs=logprobs)]
                )
                continue
            generated += event.completion_tokens
            if event.content:
                yield chunk([ChunkChoice(index=event.index, delta=Delta(content=event.content))])
            if event.calls:
                indexed = [{"index": k, **call} for k, call in enumerate(event.calls)]
                yield chunk([ChunkChoice(index=event.index, delta=Delta(tool_calls=indexed))])
            yield chunk([ChunkChoice(index=event.index, delta=Delta(), finish_reason=event.reason)])
        if include_usage:
            yield chunk([], Usage.of(run.prompt_tokens, generated))
    finally:
        await run.events.aclose()
