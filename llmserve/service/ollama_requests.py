"""How an Ollama chat or generate request becomes a chat completions (or, with `raw`, a completions)
request: messages with their tool-call ids and images, `options` as sampling fields, `format` as a
response format; model names with Ollama's tags; Ollama's timestamps."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from llmserve.errors import InvalidRequest, ModelNotFound
from llmserve.models.registry import ModelRegistry
from llmserve.protocol.base import parse_request
from llmserve.protocol.ollama import ChatRequest, Format, GenerateRequest, Message, OllamaBody, Options
from llmserve.protocol.openai_chat import ChatCompletionRequest
from llmserve.protocol.openai_completions import CompletionRequest

log = logging.getLogger(__name__)
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


def _keep_alive(body: dict[str, Any], keep_alive: int | float | str | None) -> dict[str, Any]:
    return body if keep_alive is None else {**body, "keep_alive": keep_alive}


def _chat(
    name: str,
    messages: list[Message],
    options: Options | None,
    fmt: Format,
    keep_alive: int | float | str | None,
    tools: list[dict[str, Any]] | None = None,
) -> ChatCompletionRequest:
    body: dict[str, Any] = {"model": name, "messages": chat_messages(messages), **sampling(options)}
    if tools:
        body["tools"] = tools
    response = response_format(fmt)
    if response is not None:
        body["response_format"] = response
    return parse_request(ChatCompletionRequest, _keep_alive(body, keep_alive))


def chat_request(request: ChatRequest, name: str) -> ChatCompletionRequest:
    _warn_unknown(request, request.options, "/api/chat")
    return _chat(name, request.messages, request.options, request.format, request.keep_alive, request.tools)


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
    if request.raw:
        if request.images or response_format(request.format) is not None or request.system:
            raise InvalidRequest("'raw' prompts take no 'images', 'format' or 'system'", param="raw")
        body = {"model": name, "prompt": request.prompt, "max_tokens": None, **sampling(request.options)}
        return parse_request(CompletionRequest, _keep_alive(body, request.keep_alive))
    user = Message(role="user", content=request.prompt, images=request.images)
    system = [Message(role="system", content=request.system)] if request.system else []
    return _chat(name, [*system, user], request.options, request.format, request.keep_alive)
