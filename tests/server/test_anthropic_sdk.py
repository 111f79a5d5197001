"""The official anthropic Python SDK, unchanged, against a live llmserve: messages.create, messages.stream,
a tools round trip with tool_result, count_tokens and the error classes. Every message and stream event
we send is also validated strictly with the SDK's own pydantic types."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from anthropic_wire import assert_count, assert_error, assert_event, assert_message
from model_configs import plain
from paths import DATA
from servers import live_server
from tiny import long_context_copy

from llmserve.server import create_app
from llmserve.server.options import ServerOptions

USER: list[anthropic.types.MessageParam] = [{"role": "user", "content": "Say hi"}]
WEATHER: anthropic.types.ToolParam = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 12}},
        "required": ["city"],
        "additionalProperties": False,
    },
}


@pytest.fixture(scope="module")
def base_url(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    long = long_context_copy(tiny_dir, tmp_path_factory.mktemp("models") / "tiny")  # room for tools
    model = replace(plain(long, "org/tiny"), model_aliases=("claude-*",))
    app = create_app([model], "org/tiny", preload="none")
    with live_server(app) as url:
        yield url


def client(base_url: str, api_key: str = "unused") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=base_url, api_key=api_key, max_retries=0)


@pytest.fixture(scope="module")
def sdk(base_url: str) -> Iterator[anthropic.Anthropic]:
    with client(base_url) as opened:
        yield opened


def test_messages_create(sdk: anthropic.Anthropic) -> None:
    message = sdk.messages.create(
        model="org/tiny", max_tokens=5, messages=USER, extra_body={"temperature": 0}
    )
    assert_message(message)
    assert message.id.startswith("msg_") and message.model == "org/tiny"
    assert message.stop_reason in ("end_turn", "max_tokens") and message.stop_sequence is None
    assert message.usage.output_tokens <= 5 and message.usage.input_tokens > 0
    assert message._request_id


def test_messages_stream_matches_create(sdk: anthropic.Anthropic) -> None:
    kwargs = {
        "model": "org/tiny",
        "max_tokens": 6,
        "messages": USER,
        "system": "Be brief",
        "extra_body": {"temperature": 0.0},
    }
    whole = sdk.messages.create(**kwargs)  # type: ignore[call-overload]
    with sdk.messages.stream(**kwargs) as stream:  # type: ignore[arg-type]
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert_message(final)
    assert text == "".join(b.text for b in whole.content if b.type == "text")
    assert [b.to_dict() for b in final.content] == [b.to_dict() for b in whole.content]
    assert final.stop_reason == whole.stop_reason
    assert final.usage.output_tokens == whole.usage.output_tokens
    raw = sdk.messages.create(stream=True, **kwargs)  # type: ignore[call-overload]
    events = list(raw)
    for event in events:
        assert_event(event)
    names = [e.type for e in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]


def test_stop_sequence_is_reported(sdk: anthropic.Anthropic) -> None:
    free = sdk.messages.create(model="org/tiny", max_tokens=8, messages=USER, extra_body={"temperature": 0})
    text = "".join(b.text for b in free.content if b.type == "text")
    if len(text) < 3:
        pytest.skip("the tiny model said too little to cut")
    stop = text[1:3]
    cut = sdk.messages.create(
        model="org/tiny", max_tokens=8, messages=USER, stop_sequences=[stop], extra_body={"temperature": 0}
    )
    assert cut.stop_reason == "stop_sequence" and cut.stop_sequence == stop
    assert_message(cut)


def test_tools_round_trip_with_tool_result(sdk: anthropic.Anthropic) -> None:
    first = sdk.messages.create(
        model="org/tiny",
        max_tokens=150,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
    )
    assert_message(first)
    assert first.stop_reason == "tool_use"
    call = first.content[-1]
    assert call.type == "tool_use" and call.name == "get_weather" and call.id.startswith("toolu_")
    assert isinstance(call.input, dict) and isinstance(call.input["city"], str)
    second = sdk.messages.create(
        model="org/tiny",
        max_tokens=5,
        tools=[WEATHER],
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": first.content},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": call.id, "content": "sunny", "is_error": False},
                    {"type": "text", "text": "And so?"},
                ],
            },
        ],
    )
    assert_message(second)
    assert second.usage.input_tokens > first.usage.input_tokens
    with sdk.messages.stream(
        model="org/tiny",
        max_tokens=150,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    streamed = final.content[-1]
    assert streamed.type == "tool_use" and isinstance(streamed.input, dict) and "city" in streamed.input
    assert any(e.type == "input_json" for e in events)


def test_count_tokens(sdk: anthropic.Anthropic) -> None:
    plain_count = sdk.messages.count_tokens(model="org/tiny", messages=USER)
    assert_count(plain_count)
    message = sdk.messages.create(model="org/tiny", max_tokens=1, messages=USER)
    assert plain_count.input_tokens == message.usage.input_tokens
    with_tools = sdk.messages.count_tokens(model="org/tiny", messages=USER, tools=[WEATHER])
    assert with_tools.input_tokens > plain_count.input_tokens


def test_sdk_error_classes(sdk: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as not_found:
        sdk.messages.create(model="nope", max_tokens=5, messages=USER)
    assert not_found.value.body == {
        "type": "error",
        "error": {"type": "not_found_error", "message": not_found.value.body["error"]["message"]},  # type: ignore[index]
    }
    with pytest.raises(anthropic.BadRequestError) as bad:
        sdk.messages.create(model="org/tiny", max_tokens=5, messages=USER, extra_body={"temperature": 1.5})
    assert bad.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert_error(bad.value.body)
    assert_error(not_found.value.body)
    assert "temperature" in bad.value.message


def test_authentication_error_with_api_key(tiny_dir: Path) -> None:
    app = create_app(
        [plain(tiny_dir, "org/tiny")], "org/tiny", preload="none", options=ServerOptions(api_keys=("k1",))
    )
    with live_server(app) as url:
        with client(url) as wrong, pytest.raises(anthropic.AuthenticationError) as denied:
            wrong.messages.create(model="org/tiny", max_tokens=2, messages=USER)
        assert denied.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
        with client(url, "k1") as good:  # sends x-api-key
            assert good.messages.create(model="org/tiny", max_tokens=2, messages=USER).type == "message"
        with anthropic.Anthropic(base_url=url, auth_token="k1", max_retries=0) as bearer:  # Bearer
            assert bearer.messages.count_tokens(model="org/tiny", messages=USER).input_tokens > 0


def test_a_claude_code_request_replayed(base_url: str) -> None:
    """Claude Code's request shape (tests/data/claude_code_request.json): its own model name (routed by
    the `claude-*` alias), beta headers, cache_control, metadata, tools, a tool_result turn, streamed."""
    captured = json.loads((DATA / "claude_code_request.json").read_text())
    body = {**captured["body"], "max_tokens": 64}  # the rest as sent; a short answer keeps the test quick
    headers = {**captured["headers"], "x-api-key": "unused"}
    response = httpx.post(f"{base_url}/v1/messages", json=body, headers=headers, timeout=60)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["request-id"]
    events = sse_events(response.text)
    for name, payload in events:
        assert payload["type"] == name
        assert_event(payload)
    names = [name for name, _ in events]
    assert names[:2] == ["message_start", "ping"] and names[-2:] == ["message_delta", "message_stop"]
    assert events[0][1]["message"]["model"] == "org/tiny"
    counted = httpx.post(
        f"{base_url}/v1/messages/count_tokens",
        json={k: v for k, v in body.items() if k in ("model", "messages", "system", "tools")},
        headers=headers,
    )
    assert counted.status_code == 200 and counted.json() == {
        "input_tokens": events[0][1]["message"]["usage"]["input_tokens"]
    }


def sse_events(body: str) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of each event of an SSE body; comments (keep-alives) skipped."""
    out = []
    for block in body.split("\n\n"):
        lines = [line for line in block.splitlines() if line and not line.startswith(":")]
        if not lines:
            continue
        assert lines[0].startswith("event: ") and lines[1].startswith("data: "), block
        out.append((lines[0][len("event: ") :], json.loads(lines[1][len("data: ") :])))
    return out


def test_output_config_format_constrains_the_text(sdk: anthropic.Anthropic) -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string", "maxLength": 10}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    message = sdk.messages.create(
        model="org/tiny",
        max_tokens=80,
        messages=USER,
        output_config={"format": {"type": "json_schema", "schema": schema}},
    )
    assert_message(message)
    assert message.stop_reason == "end_turn"
    [block] = message.content
    assert block.type == "text" and set(json.loads(block.text)) == {"answer"}


def test_the_beta_client_path_and_headers(sdk: anthropic.Anthropic) -> None:
    """Claude Code uses the beta client: POST /v1/messages?beta=true with an anthropic-beta header."""
    message = sdk.beta.messages.create(
        model="claude-haiku-4-5-20251001",
        max_tokens=3,
        messages=USER,
        betas=["interleaved-thinking-2025-05-14", "claude-code-20250219"],
    )
    assert message.type == "message" and message.model == "org/tiny"
    with sdk.beta.messages.stream(model="claude-opus-4-1", max_tokens=3, messages=USER) as stream:
        assert stream.get_final_message().usage.output_tokens <= 3


@pytest.fixture(scope="module")
def roomy_url(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The tiny model with room for a whole Claude Code prompt (its tools and instructions)."""
    long = long_context_copy(tiny_dir, tmp_path_factory.mktemp("models") / "roomy", positions=131072)
    model = replace(plain(long, "org/tiny"), model_aliases=("claude-*",))
    with live_server(create_app([model], "org/tiny", preload="none")) as url:
        yield url


def test_claude_code_2_1_332_request_as_captured(roomy_url: str) -> None:
    """The first body Claude Code 2.1.332 (`claude -p`) sent, captured on the wire (tests/data/README.md):
    a `system` turn among the messages with its own `output_config`, adaptive `thinking`,
    `context_management`, twelve tools. Only `max_tokens` is lowered (it asks for 128,000)."""
    body = {**json.loads((DATA / "claude_code_2_1_332_request.json").read_text()), "max_tokens": 8}
    headers = {"anthropic-version": "2023-06-01", "anthropic-beta": "claude-code-20250219", "x-api-key": "x"}
    response = httpx.post(f"{roomy_url}/v1/messages?beta=true", json=body, headers=headers, timeout=300)
    assert response.status_code == 200, response.text
    events = sse_events(response.text)
    for _, payload in events:
        assert_event(payload)
    names = [name for name, _ in events]
    assert names[:2] == ["message_start", "ping"] and names[-2:] == ["message_delta", "message_stop"]
    assert events[0][1]["message"]["usage"]["input_tokens"] > 10_000
