"""Anthropic's Messages API over the chat service: a Messages request becomes a chat completions request
(validated as any other), runs through `ChatService.run`, and its events come back as a `message` or as
Anthropic's stream events. No chat logic of its own (tools, constraints, sampling defaults are chat's)."""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import AsyncGenerator
from typing import Any

from llmserve.config.keys import Tenant
from llmserve.errors import InvalidRequest
from llmserve.protocol.anthropic import (
    CountTokensRequest,
    ImageBlock,
    MessageParam,
    MessagesRequest,
    StopReason,
    TextBlock,
    ThinkingBlock,
    ToolChoice,
    ToolParam,
    ToolResultBlock,
    ToolUseBlock,
    Usage,
)
from llmserve.protocol.anthropic import Message as MessageOut
from llmserve.protocol.base import parse_request
from llmserve.protocol.openai_chat import ChatCompletionRequest
from llmserve.service.chat import ChatService, ChoiceEnd, ChoiceEvent, TextPiece
from llmserve.service.streams import RequestStats

log = logging.getLogger(__name__)

_STOP_REASONS: dict[str, StopReason] = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def _system(system: str | list[TextBlock] | None) -> list[dict[str, Any]]:
    if system is None:
        return []
    text = system if isinstance(system, str) else "\n".join(block.text for block in system)
    return [{"role": "system", "content": text}] if text else []


def _tool_result(block: ToolResultBlock, where: str) -> dict[str, Any]:
    """A tool result as an OpenAI `tool` message; `is_error` says so in front of the text."""
    if isinstance(block.content, list):
        if any(isinstance(part, ImageBlock) for part in block.content):
            raise InvalidRequest(
                f"{where}: images in a tool_result are not supported", param=f"{where}.content"
            )
        text = "\n".join(part.text for part in block.content if isinstance(part, TextBlock))
    else:
        text = block.content or ""
    if block.is_error:
        text = f"Error: {text}"
    return {"role": "tool", "tool_call_id": block.tool_use_id, "content": text}


def _messages(index: int, message: MessageParam) -> list[dict[str, Any]]:
    """One Anthropic message as OpenAI chat messages: a user turn's tool results become `tool`
    messages (before its text and images); an assistant turn's tool_use blocks become `tool_calls`; a
    system turn (text only) stays a system message where it stands."""
    if isinstance(message.content, str):
        return [{"role": message.role, "content": message.content}]
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for i, block in enumerate(message.content):
        where = f"messages[{index}].content[{i}]"
        if isinstance(block, TextBlock):
            parts.append({"type": "text", "text": block.text})
        elif isinstance(block, ImageBlock) and message.role == "user":
            parts.append({"type": "image_url", "image_url": {"url": block.url()}})
        elif isinstance(block, ToolResultBlock) and message.role == "user":
            out.append(_tool_result(block, where))
        elif isinstance(block, ToolUseBlock) and message.role == "assistant":
            arguments = json.dumps(block.input, ensure_ascii=False)
            calls.append(
                {"id": block.id, "type": "function", "function": {"name": block.name, "arguments": arguments}}
            )
        elif isinstance(block, ThinkingBlock) or block.type == "redacted_thinking":
            continue  # earlier reasoning is not part of the prompt
        else:
            belongs = "an assistant" if block.type == "tool_use" else "a user"
            raise InvalidRequest(f"{where}: a '{block.type}' block belongs in {belongs} message", param=where)
    if message.role == "system":
        out.append({"role": "system", "content": "\n".join(part["text"] for part in parts)})
    elif message.role == "assistant":
        text = "".join(part["text"] for part in parts)
        if text or calls:
            out.append(
                {"role": "assistant", "content": text or None, **({"tool_calls": calls} if calls else {})}
            )
    elif parts:
        out.append({"role": "user", "content": parts})
    return out


def _tools(tools: list[ToolParam] | None) -> list[dict[str, Any]] | None:
    """The custom tools as OpenAI function tools; server tools are left out, with a warning."""
    if tools is None:
        return None
    out = []
    for i, tool in enumerate(tools):
        if not tool.custom:
            log.warning("tools[%d]: server tool type %r is not run by llmserve; left out", i, tool.type)
            continue
        if tool.input_schema is None:
            raise InvalidRequest(f"tools[{i}] needs an 'input_schema'", param=f"tools[{i}].input_schema")
        function: dict[str, Any] = {"name": tool.name, "parameters": tool.input_schema}
        if tool.description is not None:
            function["description"] = tool.description
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: ToolChoice | None) -> tuple[Any, bool | None]:
    """OpenAI's `tool_choice` and `parallel_tool_calls` for Anthropic's `tool_choice`."""
    if choice is None:
        return None, None
    parallel = None if choice.disable_parallel_tool_use is None else not choice.disable_parallel_tool_use
    if choice.type == "tool":
        if not choice.name:
            raise InvalidRequest("tool_choice of type 'tool' needs a 'name'", param="tool_choice.name")
        return {"type": "function", "function": {"name": choice.name}}, parallel
    return {"auto": "auto", "any": "required", "none": "none"}[choice.type], parallel


def chat_request(request: MessagesRequest | CountTokensRequest) -> ChatCompletionRequest:
    """The chat completions request that asks the same of the model (validated as any other)."""
    messages = _system(request.system)
    for i, message in enumerate(request.messages):
        messages += _messages(i, message)
    tools = _tools(request.tools)
    choice, parallel = _tool_choice(request.tool_choice)
    body: dict[str, Any] = {"model": request.model, "messages": messages}
    if tools:
        body["tools"] = tools
        if choice is not None:
            body["tool_choice"] = choice
    if parallel is not None:
        body["parallel_tool_calls"] = parallel
    if request.output_config is not None and request.output_config.format is not None:
        schema = request.output_config.format.schema_
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}
    if isinstance(request, MessagesRequest):
        body["max_tokens"] = request.max_tokens
        for name in ("temperature", "top_p", "top_k"):
            if getattr(request, name) is not None:
                body[name] = getattr(request, name)
        if request.stop_sequences:
            body["stop"] = request.stop_sequences
    else:
        body["max_tokens"] = 1
    return parse_request(ChatCompletionRequest, body)


def _blocks(text: str, calls: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    return blocks + [_tool_use(call) for call in calls]


def _tool_use(call: dict[str, Any]) -> dict[str, Any]:
    function = call["function"]
    return {
        "type": "tool_use",
        "id": f"toolu_{call['id'].removeprefix('call_')}",
        "name": function["name"],
        "input": _input(function["arguments"]),
    }


def _input(arguments: str) -> dict[str, Any]:
    """A call's arguments as the object Anthropic's `input` is: arguments a model wrote as a JSON
    string are read once more; anything but an object is kept under `"input"`."""
    try:
        value: Any = json.loads(arguments or "{}")
    except json.JSONDecodeError:
        value = arguments
    if isinstance(value, str):
        with contextlib.suppress(json.JSONDecodeError):
            value = json.loads(value)
    return value if isinstance(value, dict) else {"input": value}


def _stop(end: ChoiceEnd) -> tuple[StopReason, str | None]:
    if end.stop_sequence is not None and not end.calls:
        return "stop_sequence", end.stop_sequence
    return _STOP_REASONS[end.reason], None


class MessagesService:
    def __init__(self, chat: ChatService) -> None:
        self.chat = chat

    async def complete(self, request: MessagesRequest, stats: RequestStats | None = None) -> MessageOut:
        run = await self.chat.run(chat_request(request), stats)
        text: list[str] = []
        end: ChoiceEnd | None = None
        async for event in run.events:
            if isinstance(event, TextPiece):
                text.append(event.text)
            else:
                end = event
        assert end is not None  # a run that does not fail ends its choice
        text.append(end.content or "")
        reason, sequence = _stop(end)
        return MessageOut(
            id=f"msg_{uuid.uuid4().hex[:24]}",
            model=run.model,
            content=_blocks("".join(text), end.calls),
            stop_reason=reason,
            stop_sequence=sequence,
            usage=Usage(input_tokens=run.prompt_tokens, output_tokens=end.completion_tokens),
        )

    async def open_stream(
        self, request: MessagesRequest, stats: RequestStats | None = None
    ) -> AsyncGenerator[tuple[str, dict[str, Any]], None]:
        """(event name, data) pairs once generation has started, so that load and prompt errors are
        raised here, before any byte of the response is sent."""
        run = await self.chat.run(chat_request(request), stats)
        return _stream_events(run.model, run.prompt_tokens, run.events)

    async def count_tokens(self, request: CountTokensRequest, tenant: Tenant | None = None) -> dict[str, int]:
        """The prompt's tokens as the model's chat template renders it, tools included: the prompt is
        queued for one token, counted when it starts, and cancelled (`tenant`: whose request it is)."""
        run = await self.chat.run(chat_request(request), RequestStats(tenant=tenant))
        await run.events.aclose()
        return {"input_tokens": run.prompt_tokens}


async def _stream_events(
    model: str, prompt_tokens: int, events: AsyncGenerator[ChoiceEvent, None]
) -> AsyncGenerator[tuple[str, dict[str, Any]], None]:
    """message_start, ping, then per block content_block_start → deltas → content_block_stop, then
    message_delta (stop reason, usage) and message_stop."""
    usage = Usage(input_tokens=prompt_tokens, output_tokens=0).model_dump()
    start = MessageOut(
        id=f"msg_{uuid.uuid4().hex[:24]}", model=model, content=[], stop_reason=None, usage=Usage(**usage)
    )
    yield "message_start", {"type": "message_start", "message": start.model_dump()}
    yield "ping", {"type": "ping"}
    index = 0
    text_open = False
    try:
        async for event in events:
            if isinstance(event, TextPiece):
                if not event.text:
                    continue
                if not text_open:
                    yield "content_block_start", _block_start(index, {"type": "text", "text": ""})
                    text_open = True
                yield "content_block_delta", _delta(index, {"type": "text_delta", "text": event.text})
                continue
            if event.content:
                if not text_open:
                    yield "content_block_start", _block_start(index, {"type": "text", "text": ""})
                    text_open = True
                yield "content_block_delta", _delta(index, {"type": "text_delta", "text": event.content})
            if text_open:
                yield "content_block_stop", {"type": "content_block_stop", "index": index}
                index += 1
            for call in event.calls:
                block = _tool_use(call)
                yield "content_block_start", _block_start(index, {**block, "input": {}})
                partial = json.dumps(block["input"], ensure_ascii=False)
                yield (
                    "content_block_delta",
                    _delta(index, {"type": "input_json_delta", "partial_json": partial}),
                )
                yield "content_block_stop", {"type": "content_block_stop", "index": index}
                index += 1
            reason, sequence = _stop(event)
            usage["output_tokens"] = event.completion_tokens
            yield (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": reason, "stop_sequence": sequence},
                    "usage": usage,
                },
            )
        yield "message_stop", {"type": "message_stop"}
    finally:
        await events.aclose()


def _block_start(index: int, block: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": block}


def _delta(index: int, delta: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": delta}
