"""/v1/messages on scripted engines: exact JSON of messages and stream events, stop reasons, tools,
errors in Anthropic's shape with its status codes, and the request fields Claude clients send."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from anthropic_wire import assert_error, assert_event, assert_message
from fakes import scripted
from model_configs import model
from starlette.testclient import TestClient

from llmserve.server import create_app
from llmserve.server.options import ServerOptions

PIECES = ["Hel", "lo", " wor", "ld"]
CALL = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
WEATHER = {
    "name": "get_weather",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
ASK = {"model": "m", "max_tokens": 16, "messages": [{"role": "user", "content": "hi there"}]}


def client_of(pieces: list[str], **kwargs: Any) -> TestClient:
    options = kwargs.pop("options", None)
    app = create_app([model("m")], "m", factory=scripted(pieces, **kwargs), preload="none", options=options)
    return TestClient(app)


@pytest.fixture
def client() -> Iterator[TestClient]:
    with client_of(PIECES) as test_client:
        yield test_client


def events_of(text: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in text.split("\n\n"):
        lines = [line for line in block.splitlines() if line and not line.startswith(":")]
        if lines:
            assert lines[0].startswith("event: ") and lines[1].startswith("data: "), block
            out.append((lines[0][len("event: ") :], json.loads(lines[1][len("data: ") :])))
    for name, payload in out:
        assert payload["type"] == name
        assert_event(payload)
    return out


def test_a_message_in_anthropics_shape(client: TestClient) -> None:
    response = client.post(
        "/v1/messages", json=ASK, headers={"anthropic-version": "2023-06-01", "anthropic-beta": "x-2025"}
    )
    assert response.status_code == 200
    body = response.json()
    assert_message(body)
    assert body["id"].startswith("msg_") and response.headers["request-id"]
    assert {k: v for k, v in body.items() if k != "id"} == {
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": [{"type": "text", "text": "Hello world"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 3,
            "output_tokens": 5,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


@pytest.mark.parametrize(
    ("extra", "text", "reason", "sequence"),
    [
        ({"stop_sequences": ["zzz", "wor"]}, "Hello ", "stop_sequence", "wor"),
        ({"max_tokens": 2}, "Hello", "max_tokens", None),
        ({"stop_sequences": ["zzz"]}, "Hello world", "end_turn", None),
    ],
)
def test_stop_reasons(
    client: TestClient, extra: dict[str, Any], text: str, reason: str, sequence: str | None
) -> None:
    body = client.post("/v1/messages", json={**ASK, **extra}).json()
    assert_message(body)
    assert (body["content"], body["stop_reason"], body["stop_sequence"]) == (
        [{"type": "text", "text": text}],
        reason,
        sequence,
    )


def test_stream_events_in_order(client: TestClient) -> None:
    response = client.post("/v1/messages", json={**ASK, "stream": True, "stop_sequences": ["ld"]})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = events_of(response.text)
    start = events[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None and start["usage"]["input_tokens"] == 3
    assert [(n, p) for n, p in events[1:]] == [
        ("ping", {"type": "ping"}),
        (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
        *[
            (
                "content_block_delta",
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}},
            )
            for t in ["He", "llo", " wor"]  # "l" waits: it may begin "ld"
        ],
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "stop_sequence", "stop_sequence": "ld"},
                "usage": {
                    "input_tokens": 3,
                    "output_tokens": 4,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                },
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]


def test_tool_use_whole_and_streamed() -> None:
    with client_of(["I will look. ", CALL]) as client:
        body = {**ASK, "tools": [WEATHER], "tool_choice": {"type": "auto"}}
        message = client.post("/v1/messages", json=body).json()
        assert_message(message)
        text, call = message["content"]
        assert text == {"type": "text", "text": "I will look."}
        assert call["type"] == "tool_use" and call["id"].startswith("toolu_")
        assert (call["name"], call["input"], message["stop_reason"]) == (
            "get_weather",
            {"city": "Paris"},
            "tool_use",
        )
        events = events_of(client.post("/v1/messages", json={**body, "stream": True}).text)
        names = [n for n, _ in events]
        assert names == [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
        started = events[5][1]["content_block"]
        assert started["type"] == "tool_use" and started["input"] == {} and started["name"] == "get_weather"
        assert events[6][1]["delta"] == {"type": "input_json_delta", "partial_json": '{"city": "Paris"}'}
        assert events[8][1]["delta"]["stop_reason"] == "tool_use"


def test_request_blocks_reach_the_model_as_chat_messages(client: TestClient) -> None:
    """Tool use and tool result turns, images, system blocks and the fields Claude Code sends."""
    body = {
        **ASK,
        "system": [{"type": "text", "text": "Be brief", "cache_control": {"type": "ephemeral"}}],
        "metadata": {"user_id": "u1"},
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "temperature": 1,
        "top_k": 5,
        "top_p": 0.5,
        "tools": [WEATHER, {"type": "web_search_20250305", "name": "web_search", "max_uses": 5}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "s"},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": [{"type": "text", "text": "sunny"}],
                    },
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": "boom", "is_error": True},
                ],
            },
        ],
    }
    response = client.post("/v1/messages", json=body)
    assert response.status_code == 200, response.text
    assert_message(response.json())


def _error(response: Any, status: int, kind: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"type", "error"} and body["type"] == "error"
    assert set(body["error"]) == {"type", "message"} and body["error"]["type"] == kind
    if kind != "request_too_large":  # in Anthropic's docs, not in the SDK's error union
        assert_error(body)
    return str(body["error"]["message"])


def test_errors_in_anthropics_shape(client: TestClient) -> None:
    assert "max_tokens" in _error(
        client.post("/v1/messages", json={k: v for k, v in ASK.items() if k != "max_tokens"}),
        400,
        "invalid_request_error",
    )
    assert "'nope' does not exist" in _error(
        client.post("/v1/messages", json={**ASK, "model": "nope"}), 404, "not_found_error"
    )
    _error(client.post("/v1/messages", json={**ASK, "temperature": 1.5}), 400, "invalid_request_error")
    _error(client.post("/v1/messages", json={**ASK, "unknown": 1}), 400, "invalid_request_error")
    bad_block = {
        **ASK,
        "messages": [{"role": "assistant", "content": [{"type": "tool_result", "tool_use_id": "x"}]}],
    }
    assert "messages[0].content[0]" in _error(
        client.post("/v1/messages", json=bad_block), 400, "invalid_request_error"
    )
    _error(client.get("/v1/messages"), 405, "invalid_request_error")
    _error(client.post("/v1/messages/nothing", json={}), 404, "not_found_error")
    _error(client.post("/v1/messages", content=b"{"), 400, "invalid_request_error")
    forced = {**ASK, "tools": [WEATHER], "tool_choice": {"type": "tool", "name": "other"}}
    _error(client.post("/v1/messages", json=forced), 400, "invalid_request_error")


def test_body_limit_and_api_key_errors() -> None:
    options = ServerOptions(api_keys=("k",), max_request_bytes=200)
    with client_of(PIECES, options=options) as client:
        _error(client.post("/v1/messages", json=ASK), 401, "authentication_error")
        big = {**ASK, "system": "x" * 500}
        _error(client.post("/v1/messages", json=big, headers={"x-api-key": "k"}), 413, "request_too_large")
        assert client.post("/v1/messages", json=ASK, headers={"x-api-key": "k"}).status_code == 200


def test_a_failure_after_the_start_is_an_error_event() -> None:
    with client_of(PIECES, fail_at_step=3) as client:
        events = events_of(client.post("/v1/messages", json={**ASK, "stream": True}).text)
    assert events[0][0] == "message_start"
    name, payload = events[-1]
    assert name == "error" and payload["error"]["type"] == "api_error"


def test_count_tokens_counts_the_rendered_prompt(client: TestClient) -> None:
    response = client.post(
        "/v1/messages/count_tokens", json={k: v for k, v in ASK.items() if k != "max_tokens"}
    )
    assert response.status_code == 200 and response.json() == {"input_tokens": 3}
    _error(
        client.post("/v1/messages/count_tokens", json=ASK), 400, "invalid_request_error"
    )  # no max_tokens there


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ('{"city": "Paris"}', {"city": "Paris"}),
        ('"{\\"city\\": \\"Paris\\"}"', {"city": "Paris"}),  # a JSON string holding the object
        ("[1, 2]", {"input": [1, 2]}),
    ],
)
def test_tool_use_input_is_always_an_object(arguments: str, expected: dict[str, Any]) -> None:
    call = f'<tool_call>{{"name": "get_weather", "arguments": {arguments}}}</tool_call>'
    with client_of([call]) as client:
        message = client.post("/v1/messages", json={**ASK, "tools": [WEATHER]}).json()
    assert_message(message)
    assert message["content"][0]["input"] == expected
