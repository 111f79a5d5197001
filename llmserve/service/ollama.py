"""Ollama's chat and generate over the chat and completions services: a request becomes a chat
completions (or, with `raw`, a completions) request, validated as any other, and its events come back
as Ollama's objects: NDJSON lines while streaming, then the last one with `done: true`, the counts and
the durations (nanoseconds). No generation logic of its own."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from llmserve.config.keep_alive import parse_keep_alive
from llmserve.errors import InvalidRequest, ModelNotFound
from llmserve.models.jobs import EventStream, Failed, Finished, TextDelta
from llmserve.models.registry import ModelRegistry
from llmserve.models.status import ModelState
from llmserve.protocol.base import parse_request
from llmserve.protocol.ollama import ChatRequest, Format, GenerateRequest, Message, OllamaBody, Options
from llmserve.protocol.openai_chat import ChatCompletionRequest
from llmserve.protocol.openai_completions import CompletionRequest
from llmserve.service.chat import ChatRun, ChatService, ChoiceEnd, TextPiece
from llmserve.service.completions import CompletionService
from llmserve.service.streams import RequestStats

log = logging.getLogger(__name__)
NS = 1_000_000_000
_SAMPLING = (
    ("temperature", "temperature"),
    ("top_p", "top_p"),
    ("top_k", "top_k"),
    ("min_p", "min_p"),
    ("seed", "seed"),
    ("presence_penalty", "presence_penalty"),
    ("frequency_penalty", "frequency_penalty"),
    ("repeat_penalty", "repetition_penalty"),
)


def created_at(at: float | None = None) -> str:
    """RFC 3339 in UTC with microseconds, as Ollama writes it (`2023-08-04T19:22:45.499127Z`)."""
    moment = datetime.fromtimestamp(time.time() if at is None else at, UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def model_name(registry: ModelRegistry, name: str) -> str:
    """The llmserve name of an Ollama `name:tag`: the name itself when the registry knows it, else
    `name` for the tag `latest` and `name@tag` (that version) for any other tag."""
    try:
        registry.status(name)
        return name
    except ModelNotFound:
        base, colon, tag = name.rpartition(":")
        if not colon or not base:
            raise
        candidate = base if tag == "latest" else f"{base}@{tag}"
        try:
            registry.status(candidate)
        except ModelNotFound:
            raise ModelNotFound(name, registry.api_ids()) from None
        return candidate


def _warn_unknown(body: OllamaBody, options: Options | None, where: str) -> None:
    if body.unknown_keys():
        log.warning("%s: ignored unknown keys %s", where, ", ".join(body.unknown_keys()))
    if options is not None and options.ignored():
        log.debug("%s: ignored options %s", where, ", ".join(options.ignored()))


def sampling(options: Options | None) -> dict[str, Any]:
    """The chat/completions sampling fields `options` sets (left-out ones get the model's defaults)."""
    if options is None:
        return {}
    out: dict[str, Any] = {
        dst: getattr(options, src) for src, dst in _SAMPLING if getattr(options, src) is not None
    }
    if options.stop:
        out["stop"] = options.stop
    if options.num_predict is not None:
        if options.num_predict == 0 or options.num_predict < -2:
            raise InvalidRequest(
                "options.num_predict is a positive number of tokens, or -1 / -2 for no limit",
                param="options.num_predict",
            )
        if options.num_predict > 0:
            out["max_tokens"] = options.num_predict
    return out


def response_format(value: Format) -> dict[str, Any] | None:
    if value is None or value == "":
        return None
    if value == "json":
        return {"type": "json_object"}
    return {"type": "json_schema", "json_schema": {"name": "format", "schema": value}}


def _images(images: list[str]) -> list[dict[str, Any]]:
    return [
        {
            "type": "image_url",
            "image_url": {"url": image if image.startswith("data:") else f"data:image;base64,{image}"},
        }
        for image in images
    ]


def chat_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Ollama's messages as OpenAI chat messages. Ollama's tool calls have no ids: each gets one, and
    a `tool` message answers the earliest unanswered call of its `tool_name` (else the earliest)."""
    out: list[dict[str, Any]] = []
    unanswered: list[tuple[str, str]] = []  # (call id, function name)
    for i, message in enumerate(messages):
        if message.images and message.role != "user":
            raise InvalidRequest("only user messages carry images", param=f"messages[{i}].images")
        if message.role == "assistant" and message.tool_calls:
            calls = []
            for k, call in enumerate(message.tool_calls):
                call_id = f"call_{i}_{k}"
                unanswered.append((call_id, call.function.name))
                arguments = json.dumps(call.function.arguments, ensure_ascii=False)
                calls.append(
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": call.function.name, "arguments": arguments},
                    }
                )
            out.append({"role": "assistant", "content": message.content or None, "tool_calls": calls})
        elif message.role == "tool":
            match = next((u for u in unanswered if message.tool_name in (None, u[1])), None)
            if match is not None:
                unanswered.remove(match)
            out.append(
                {
                    "role": "tool",
                    "tool_call_id": match[0] if match else f"call_{i}",
                    "content": message.content,
                }
            )
        elif message.images:
            parts = [{"type": "text", "text": message.content}, *_images(message.images)]
            out.append({"role": "user", "content": parts})
        else:
            out.append({"role": message.role, "content": message.content})
    return out


def chat_request(request: ChatRequest, name: str) -> ChatCompletionRequest:
    _warn_unknown(request, request.options, "/api/chat")
    body: dict[str, Any] = {
        "model": name,
        "messages": chat_messages(request.messages),
        **sampling(request.options),
    }
    if request.tools:
        body["tools"] = request.tools
    fmt = response_format(request.format)
    if fmt is not None:
        body["response_format"] = fmt
    if request.keep_alive is not None:
        body["keep_alive"] = request.keep_alive
    return parse_request(ChatCompletionRequest, body)


def generate_request(request: GenerateRequest, name: str) -> ChatCompletionRequest | CompletionRequest:
    """A chat request of the system and user prompt (the model's chat template applies), or with `raw`
    a completions request of the prompt as it is."""
    _warn_unknown(request, request.options, "/api/generate")
    for field, given in (
        ("template", request.template),
        ("suffix", request.suffix),
        ("context", request.context),
    ):
        if given:
            raise InvalidRequest(
                f"'{field}' is not supported: llmserve renders prompts with the model's own chat template "
                "(or none with 'raw': true)",
                param=field,
            )
    options = sampling(request.options)
    if request.raw:
        if request.images or response_format(request.format) is not None or request.system:
            raise InvalidRequest("'raw' prompts take no 'images', 'format' or 'system'", param="raw")
        body: dict[str, Any] = {"model": name, "prompt": request.prompt, "max_tokens": None, **options}
        if request.keep_alive is not None:
            body["keep_alive"] = request.keep_alive
        return parse_request(CompletionRequest, body)
    user = Message(role="user", content=request.prompt, images=request.images)
    system = [Message(role="system", content=request.system)] if request.system else []
    body = {"model": name, "messages": chat_messages([*system, user]), **options}
    fmt = response_format(request.format)
    if fmt is not None:
        body["response_format"] = fmt
    if request.keep_alive is not None:
        body["keep_alive"] = request.keep_alive
    return parse_request(ChatCompletionRequest, body)


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


class OllamaService:
    def __init__(self, registry: ModelRegistry, chat: ChatService, completions: CompletionService) -> None:
        self.registry = registry
        self.chat = chat
        self.completions = completions

    def clock(self, name: str) -> Clock:
        return Clock(time.monotonic(), self.registry.status(name).state is ModelState.LOADED)

    async def load_or_unload(
        self, request: ChatRequest | GenerateRequest, name: str
    ) -> dict[str, Any] | None:
        """An empty request loads the model, or with `keep_alive: 0` unloads it (None: not empty)."""
        empty = (
            not request.messages
            if isinstance(request, ChatRequest)
            else not (request.prompt or request.images)
        )
        if not empty:
            return None
        unload = request.keep_alive is not None and parse_keep_alive(request.keep_alive) == 0
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
        prompt = run.prompt_tokens
        try:
            self._check_num_ctx(*num_ctx, prompt)
            async for event in run.events:
                if isinstance(event, TextPiece):
                    if streamed:
                        yield {
                            "model": model,
                            "created_at": created_at(),
                            "message": {"role": "assistant", "content": event.text},
                            "done": False,
                        }
                    else:
                        text.append(event.text)
                    continue
                message: dict[str, Any] = {"role": "assistant", "content": ""}
                held = "".join(text) + (event.content or "")
                calls = _calls(event)
                if streamed and (held or calls):
                    yield {
                        "model": model,
                        "created_at": created_at(),
                        "message": {
                            "role": "assistant",
                            "content": held,
                            **({"tool_calls": calls} if calls else {}),
                        },
                        "done": False,
                    }
                elif not streamed:
                    message = {
                        "role": "assistant",
                        "content": held,
                        **({"tool_calls": calls} if calls else {}),
                    }
                reason = "length" if event.reason == "length" else "stop"
                yield {
                    "model": model,
                    "created_at": created_at(),
                    "message": message,
                    "done_reason": reason,
                    "done": True,
                    **clock.durations(stats, prompt, event.completion_tokens),
                }
        finally:
            run.cancel()
            await run.events.aclose()

    async def generate_lines(
        self, request: GenerateRequest, stats: RequestStats, *, streamed: bool
    ) -> AsyncGenerator[dict[str, Any], None]:
        name = model_name(self.registry, request.model)
        clock = self.clock(name)
        inner = generate_request(request, name)
        if isinstance(inner, CompletionRequest):
            _, streams, prompt = await self.completions.start(inner, stats)
            clock.started = time.monotonic()
            num_ctx = (request.options, name)
            return self._raw_objects(request.model, streams[0][1], prompt, clock, stats, streamed, num_ctx)
        run = await self.chat.run(inner, stats)
        clock.started = time.monotonic()
        chat = self._chat_objects(request.model, run, clock, stats, streamed, (request.options, name))
        return self._generate_objects(request.model, chat)

    async def _generate_objects(
        self, model: str, chat: AsyncGenerator[dict[str, Any], None]
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Chat's objects with `response` (the text) in place of `message`."""
        try:
            async for line in chat:
                message = line.pop("message")
                yield {
                    "model": model,
                    "created_at": line.pop("created_at"),
                    "response": message["content"],
                    **line,
                }
        finally:
            await chat.aclose()

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
        text: list[str] = []
        try:
            self._check_num_ctx(*num_ctx, prompt)
            async for event in stream.until_done():
                stats.observe(event)
                if isinstance(event, TextDelta):
                    if streamed:
                        yield {
                            "model": model,
                            "created_at": created_at(),
                            "response": event.text,
                            "done": False,
                        }
                    else:
                        text.append(event.text)
                elif isinstance(event, Failed):
                    raise event.error
                elif isinstance(event, Finished):
                    reason = "length" if event.reason == "length" else "stop"
                    yield {
                        "model": model,
                        "created_at": created_at(),
                        "response": "".join(text),
                        "done_reason": reason,
                        "done": True,
                        **clock.durations(stats, prompt, event.completion_tokens),
                    }
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
