"""The Responses API without a transport: a `POST /v1/responses` body → a chat completions request run
by `ChatService.run` → the response object, or its typed stream events. Both come from one sequence of
events (the whole response is the last one's), so that streamed and whole answers cannot drift apart.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from llmserve.errors import InternalError, InvalidRequest, LLMServeError
from llmserve.protocol.base import parse_request
from llmserve.protocol.openai_chat import ChatCompletionRequest
from llmserve.protocol.openai_responses import FunctionToolIn, ResponsesRequest
from llmserve.service.chat import ChatRun, ChatService, ChoiceEnd
from llmserve.service.responses_items import chat_messages, new_id, stored_items
from llmserve.service.responses_store import ResponseStore, StoredResponse
from llmserve.service.streams import RequestStats

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    """A request made ready: the chat request to run, the request's own stored items, the whole
    conversation (previous response's included) and the echoed fields of the response."""

    chat: ChatCompletionRequest
    input_items: list[dict[str, Any]]
    conversation: list[dict[str, Any]]
    echo: dict[str, Any]
    owner: str | None  # the tenant asking (stored responses are its own)


def _tools(body: ResponsesRequest) -> list[FunctionToolIn]:
    tools = []
    for i, tool in enumerate(body.tools or []):
        if isinstance(tool, dict) and tool.get("type") == "function":
            tools.append(parse_request(FunctionToolIn, tool))
        else:
            kind = tool.get("type") if isinstance(tool, dict) else type(tool).__name__
            log.warning(
                "responses: tools[%d] of type %r ignored (llmserve runs function tools only)", i, kind
            )
    return tools


def _tool_choice(choice: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
    """Chat's `tool_choice` for the Responses one."""
    if isinstance(choice, dict):
        if choice.get("type") == "function" and isinstance(choice.get("name"), str):
            return {"type": "function", "function": {"name": choice["name"]}}
        raise InvalidRequest(
            "tool_choice must be 'none', 'auto', 'required' or {\"type\": \"function\", \"name\": ...}",
            param="tool_choice",
        )
    return choice


def prepare(body: ResponsesRequest, store: ResponseStore, owner: str | None) -> Prepared:
    body.check_supported()
    for name in ("truncation", "max_tool_calls"):
        if getattr(body, name) not in (None, "disabled"):
            log.warning("responses: %s=%r ignored", name, getattr(body, name))
    earlier: list[dict[str, Any]] = []
    if body.previous_response_id is not None:
        earlier = store.get(body.previous_response_id, owner, param="previous_response_id").continued()
    items = stored_items(body.input_items())
    conversation = [*earlier, *items]
    messages = chat_messages(conversation)
    if body.instructions:
        messages.insert(0, {"role": "system", "content": body.instructions})
    tools = _tools(body)
    text_format = body.text.format if body.text is not None else None
    fields: dict[str, Any] = {
        "model": body.model,
        "messages": messages,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "max_completion_tokens": body.max_output_tokens,
        "parallel_tool_calls": body.parallel_tool_calls,
        "tools": [t.as_chat() for t in tools] or None,
        "tool_choice": _tool_choice(body.tool_choice) if tools or body.tool_choice != "auto" else None,
        "response_format": None if text_format is None else text_format.as_response_format(),
    }
    if not messages:
        raise InvalidRequest("'input' (or 'instructions') must give the model something", param="input")
    chat = parse_request(ChatCompletionRequest, {k: v for k, v in fields.items() if v is not None})
    reasoning = body.reasoning
    echo: dict[str, Any] = {
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": body.instructions,
        "max_output_tokens": body.max_output_tokens,
        "max_tool_calls": body.max_tool_calls,
        "metadata": body.metadata or {},
        "parallel_tool_calls": body.parallel_tool_calls is not False,
        "previous_response_id": body.previous_response_id,
        "prompt_cache_key": body.prompt_cache_key,
        "reasoning": {
            "effort": None if reasoning is None else reasoning.effort,
            "summary": None if reasoning is None else reasoning.summary,
        },
        "safety_identifier": body.safety_identifier,
        "service_tier": "default",
        "store": body.store is not False,
        "temperature": body.temperature,
        "text": {
            "format": {"type": "text"} if text_format is None else text_format.echo(),
            "verbosity": (body.text.verbosity if body.text else None) or "medium",
        },
        "tool_choice": body.tool_choice or "auto",
        "tools": [t.echo() for t in tools],
        "top_logprobs": 0,
        "top_p": body.top_p,
        "truncation": body.truncation or "disabled",
    }
    if body.user is not None:
        echo["user"] = body.user
    return Prepared(chat, items, conversation, echo, owner)


def _usage(prompt_tokens: int, generated: int) -> dict[str, Any]:
    return {
        "input_tokens": prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": generated,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt_tokens + generated,
    }


class ResponsesService:
    def __init__(self, chat: ChatService, store: ResponseStore) -> None:
        self.chat = chat
        self.store = store

    async def complete(self, body: ResponsesRequest, stats: RequestStats) -> dict[str, Any]:
        """The whole response; an error while generating is raised (an HTTP error, not a response)."""
        events = await self.open_stream(body, stats, raise_errors=True)
        last: dict[str, Any] = {}
        async for event in events:
            last = event
        return dict(last["response"])

    async def open_stream(
        self, body: ResponsesRequest, stats: RequestStats, *, raise_errors: bool = False
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The stream events, once generation has started: load and prompt errors are raised here,
        before any event. A later failure ends the stream with `response.failed`."""
        prepared = prepare(body, self.store, None if stats.tenant is None else stats.tenant.name)
        run = await self.chat.run(prepared.chat, stats)
        return self._events(prepared, run, raise_errors)

    def get(self, response_id: str, owner: str | None) -> dict[str, Any]:
        return copy.deepcopy(self.store.get(response_id, owner).response)

    def delete(self, response_id: str, owner: str | None) -> dict[str, Any]:
        self.store.delete(response_id, owner)
        return {"id": response_id, "object": "response", "deleted": True}

    def input_items(
        self, response_id: str, owner: str | None, limit: int, order: str, after: str | None
    ) -> dict[str, Any]:
        """OpenAI's list object of the response's own input items, newest first unless `order=asc`."""
        items = list(self.store.get(response_id, owner).input_items)
        if order == "desc":
            items.reverse()
        if after is not None:
            ids = [item["id"] for item in items]
            items = items[ids.index(after) + 1 :] if after in ids else []
        page = items[:limit]
        return {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(items) > limit,
        }

    async def _events(
        self, prepared: Prepared, run: ChatRun, raise_errors: bool
    ) -> AsyncGenerator[dict[str, Any], None]:
        response: dict[str, Any] = {
            "id": new_id("resp"),
            "object": "response",
            "created_at": int(time.time()),
            "status": "in_progress",
            "completed_at": None,
            "model": run.model,
            "output": [],
            **prepared.echo,  # `usage` comes with the end: openapi.yaml's Response has no null usage
        }
        events = _Sequence(response)
        yield events.next("response.created", response=copy.deepcopy(response))
        yield events.next("response.in_progress", response=copy.deepcopy(response))
        message: dict[str, Any] | None = None
        texts: list[str] = []
        try:
            async for event in run.events:
                text = event.text if not isinstance(event, ChoiceEnd) else (event.content or "")
                if text or (isinstance(event, ChoiceEnd) and not event.calls and message is None):
                    if message is None:
                        message = {"id": new_id("msg"), "type": "message", "status": "in_progress"}
                        message |= {"content": [], "role": "assistant"}
                        yield events.item_added(message)
                        yield events.part("response.content_part.added", message, "")
                    if text:
                        texts.append(text)
                        yield events.text("response.output_text.delta", message, delta=text)
                if not isinstance(event, ChoiceEnd):
                    continue
                incomplete = event.reason == "length"
                if message is not None:
                    full = "".join(texts)
                    yield events.text("response.output_text.done", message, text=full)
                    yield events.part("response.content_part.done", message, full)
                    message["content"] = [_output_text(full)]
                    message["status"] = "incomplete" if incomplete else "completed"
                    yield events.item_done(message)
                for call in event.calls:
                    yield events.item_added(item := _function_call(call))
                    arguments = call["function"]["arguments"]
                    common = {"item_id": item["id"], "output_index": len(response["output"]) - 1}
                    yield events.next("response.function_call_arguments.delta", **common, delta=arguments)
                    yield events.next(
                        "response.function_call_arguments.done",
                        **common,
                        name=item["name"],
                        arguments=arguments,
                    )
                    item["arguments"], item["status"] = arguments, "completed"
                    yield events.item_done(item)
                response["usage"] = _usage(run.prompt_tokens, event.completion_tokens)
                response["status"] = "incomplete" if incomplete else "completed"
                if incomplete:
                    response["incomplete_details"] = {"reason": "max_output_tokens"}
                else:
                    response["completed_at"] = int(time.time())
        except Exception as exc:
            if raise_errors:
                raise
            if not isinstance(exc, LLMServeError):
                log.exception("responses: stream failed")
                exc = InternalError(f"internal error: {type(exc).__name__}")
            response["status"] = "failed"
            response["error"] = {"code": "server_error", "message": exc.message}
            yield events.next("response.failed", response=copy.deepcopy(response))
            self._keep(prepared, response)
            return
        finally:
            await run.events.aclose()
        self._keep(prepared, response)
        name = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
        yield events.next(name, response=copy.deepcopy(response))

    def _keep(self, prepared: Prepared, response: dict[str, Any]) -> None:
        if response["store"]:
            self.store.put(
                StoredResponse(
                    copy.deepcopy(response), prepared.input_items, prepared.conversation, prepared.owner
                )
            )


def _output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _function_call(call: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": new_id("fc"),
        "type": "function_call",
        "status": "in_progress",
        "arguments": "",
        "call_id": call["id"],
        "name": call["function"]["name"],
    }


class _Sequence:
    """Numbers the events and tracks the output items' positions."""

    def __init__(self, response: dict[str, Any]) -> None:
        self.response = response
        self.number = 0

    def next(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self.number, **fields}
        self.number += 1
        return event

    def _index(self, item: dict[str, Any]) -> int:
        return next(i for i, it in enumerate(self.response["output"]) if it is item)

    def item_added(self, item: dict[str, Any]) -> dict[str, Any]:
        self.response["output"].append(item)
        return self.next(
            "response.output_item.added", output_index=self._index(item), item=copy.deepcopy(item)
        )

    def item_done(self, item: dict[str, Any]) -> dict[str, Any]:
        return self.next(
            "response.output_item.done", output_index=self._index(item), item=copy.deepcopy(item)
        )

    def part(self, kind: str, message: dict[str, Any], text: str) -> dict[str, Any]:
        where = {"item_id": message["id"], "output_index": self._index(message), "content_index": 0}
        return self.next(kind, **where, part=_output_text(text))

    def text(self, kind: str, message: dict[str, Any], **fields: Any) -> dict[str, Any]:
        where = {"item_id": message["id"], "output_index": self._index(message), "content_index": 0}
        return self.next(kind, **where, **fields, logprobs=[])
