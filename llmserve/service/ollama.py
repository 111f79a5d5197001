"""Ollama's chat and generate over the chat and completions services: a request becomes a chat
completions (or, with `raw`, a completions) request, validated as any other, and its events come back
as Ollama's objects: NDJSON lines while streaming, then the last one with `done: true`, the counts and
the durations (nanoseconds). No generation logic of its own."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from llmserve.config.keep_alive import parse_keep_alive
from llmserve.errors import AdminRequired, InvalidRequest
from llmserve.models.jobs import EventStream, Failed, Finished, TextDelta
from llmserve.models.registry import ModelRegistry
from llmserve.models.status import ModelState
from llmserve.protocol.ollama import ChatRequest, GenerateRequest, Options
from llmserve.protocol.openai_completions import CompletionRequest
from llmserve.service.chat import ChatRun, ChatService, ChoiceEnd, TextPiece
from llmserve.service.completions import CompletionService
from llmserve.service.ollama_requests import chat_request, created_at, generate_request, model_name
from llmserve.service.streams import RequestStats

NS = 1_000_000_000


@dataclass
class Clock:
    """When the request arrived and started, to report Ollama's durations (nanoseconds)."""

    arrived: float
    was_loaded: bool
    started: float = 0.0

    def durations(self, stats: RequestStats, prompt: int, generated: int) -> dict[str, int]:
        end = time.monotonic()
        first = stats.first_token_at or end
        return {
            "total_duration": int((end - self.arrived) * NS),
            "load_duration": 0 if self.was_loaded else int((self.started - self.arrived) * NS),
            "prompt_eval_count": prompt,
            "prompt_eval_duration": int(max(first - self.started, 0) * NS),
            "eval_count": generated,
            "eval_duration": int(max(end - first, 0) * NS),
        }


def _calls(end: ChoiceEnd) -> list[dict[str, Any]]:
    out = []
    for call in end.calls:
        try:
            arguments = json.loads(call["function"]["arguments"] or "{}")
        except json.JSONDecodeError:
            arguments = {}
        out.append(
            {
                "function": {
                    "name": call["function"]["name"],
                    "arguments": arguments if isinstance(arguments, dict) else {},
                }
            }
        )
    return out


def _message(content: str, calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"role": "assistant", "content": content, **({"tool_calls": calls} if calls else {})}


def _line(
    model: str, message: dict[str, Any], reason: str | None = None, durations: dict[str, int] | None = None
) -> dict[str, Any]:
    """One chat object: a piece (`done: false`), or with `reason` the last one with its durations."""
    line = {"model": model, "created_at": created_at(), "message": message}
    if reason is None:
        return {**line, "done": False}
    done_reason = "length" if reason == "length" else "stop"
    return {**line, "done_reason": done_reason, "done": True, **(durations or {})}


async def _as_generate(chat: AsyncGenerator[dict[str, Any], None]) -> AsyncGenerator[dict[str, Any], None]:
    """Chat's objects as generate's: `response` (the text) in place of `message`."""
    try:
        async for line in chat:
            message = line.pop("message")
            yield {
                "model": line.pop("model"),
                "created_at": line.pop("created_at"),
                "response": message["content"],
                **line,
            }
    finally:
        await chat.aclose()


class OllamaService:
    def __init__(self, registry: ModelRegistry, chat: ChatService, completions: CompletionService) -> None:
        self.registry = registry
        self.chat = chat
        self.completions = completions

    def clock(self, name: str) -> Clock:
        return Clock(time.monotonic(), self.registry.status(name).state is ModelState.LOADED)

    async def load_or_unload(
        self, request: ChatRequest | GenerateRequest, name: str, admin: bool = True
    ) -> dict[str, Any] | None:
        """An empty request loads the model, or with `keep_alive: 0` unloads it (None: not empty); only
        an `admin` key may unload."""
        empty = (
            not request.messages
            if isinstance(request, ChatRequest)
            else not (request.prompt or request.images)
        )
        if not empty:
            return None
        unload = request.keep_alive is not None and parse_keep_alive(request.keep_alive) == 0
        if unload and not admin:
            raise AdminRequired(f"unloading '{request.model}' needs a key with admin rights")
        if unload:
            await self.registry.unload(name)
        else:
            await self.registry.reload(name)
        answer: dict[str, Any] = {"model": request.model, "created_at": created_at()}
        if isinstance(request, ChatRequest):
            answer["message"] = {"role": "assistant", "content": ""}
        else:
            answer["response"] = ""
        return {**answer, "done_reason": "unload" if unload else "load", "done": True}

    async def chat_lines(
        self, request: ChatRequest, stats: RequestStats, *, streamed: bool
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Starts the chat (load and prompt errors are raised here) and returns its objects: each piece
        of text when `streamed`, then the last one (with all the text when not)."""
        name = model_name(self.registry, request.model)
        clock = self.clock(name)
        run = await self.chat.run(chat_request(request, name), stats)
        clock.started = time.monotonic()
        return self._chat_objects(request.model, run, clock, stats, streamed, (request.options, name))

    async def _chat_objects(
        self,
        model: str,
        run: ChatRun,
        clock: Clock,
        stats: RequestStats,
        streamed: bool,
        num_ctx: tuple[Options | None, str],
    ) -> AsyncGenerator[dict[str, Any], None]:
        text: list[str] = []
        try:
            self._check_num_ctx(*num_ctx, run.prompt_tokens)
            async for event in run.events:
                if isinstance(event, TextPiece):
                    if streamed:
                        yield _line(model, _message(event.text))
                    else:
                        text.append(event.text)
                    continue
                held, calls = "".join(text) + (event.content or ""), _calls(event)
                if streamed and (held or calls):
                    yield _line(model, _message(held, calls))
                last = _message("") if streamed else _message(held, calls)
                durations = clock.durations(stats, run.prompt_tokens, event.completion_tokens)
                yield _line(model, last, event.reason, durations)
        finally:
            run.cancel()
            await run.events.aclose()

    async def generate_lines(
        self, request: GenerateRequest, stats: RequestStats, *, streamed: bool
    ) -> AsyncGenerator[dict[str, Any], None]:
        name = model_name(self.registry, request.model)
        clock = self.clock(name)
        inner = generate_request(request, name)
        num_ctx = (request.options, name)
        if isinstance(inner, CompletionRequest):
            _, streams, prompt = await self.completions.start(inner, stats)
            clock.started = time.monotonic()
            lines = self._raw_objects(request.model, streams[0][1], prompt, clock, stats, streamed, num_ctx)
        else:
            run = await self.chat.run(inner, stats)
            clock.started = time.monotonic()
            lines = self._chat_objects(request.model, run, clock, stats, streamed, num_ctx)
        return _as_generate(lines)

    async def _raw_objects(
        self,
        model: str,
        stream: EventStream,
        prompt: int,
        clock: Clock,
        stats: RequestStats,
        streamed: bool,
        num_ctx: tuple[Options | None, str],
    ) -> AsyncGenerator[dict[str, Any], None]:
        """A raw prompt's objects, in chat's shape (`_as_generate` makes them generate's)."""
        text: list[str] = []
        try:
            self._check_num_ctx(*num_ctx, prompt)
            async for event in stream.until_done():
                stats.observe(event)
                if isinstance(event, TextDelta):
                    if streamed:
                        yield _line(model, _message(event.text))
                    else:
                        text.append(event.text)
                elif isinstance(event, Failed):
                    raise event.error
                elif isinstance(event, Finished):
                    durations = clock.durations(stats, prompt, event.completion_tokens)
                    yield _line(model, _message("".join(text)), event.reason, durations)
        finally:
            stream.cancel()

    def _check_num_ctx(self, options: Options | None, name: str, prompt: int) -> None:
        """`num_ctx` larger than the model's context, or smaller than the prompt, is a 400."""
        if options is None or options.num_ctx is None:
            return
        context = self.registry.status(name).context_length
        if context is not None and options.num_ctx > context:
            raise InvalidRequest(
                f"options.num_ctx {options.num_ctx} is more than model '{name}' reads ({context} tokens)",
                param="options.num_ctx",
            )
        if prompt >= options.num_ctx:
            raise InvalidRequest(
                f"the prompt is {prompt} tokens, which leaves no room in options.num_ctx {options.num_ctx}",
                param="options.num_ctx",
            )
