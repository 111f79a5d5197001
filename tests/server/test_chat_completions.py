"""/v1/chat/completions through the real app and a real tiny model: exact JSON, SSE order, errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from model_configs import plain
from starlette.testclient import TestClient
from tiny import reference_greedy
from wire import assert_schema, sse_data

from llmserve.server import create_app

USER = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def client(tiny_dir: Path, tiny_dir2: Path) -> Iterator[TestClient]:
    app = create_app([plain(tiny_dir, "tiny"), plain(tiny_dir2, "tiny2")], "tiny", preload="none")
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def reference(tiny_dir: Path) -> tuple[str, int, int, bool]:
    return reference_greedy(tiny_dir, USER, 12)


def chat(client: TestClient, **body: Any) -> Any:
    return client.post("/v1/chat/completions", json={"messages": USER, **body})


def test_answer_equals_raw_generate_in_openai_shape(
    client: TestClient, reference: tuple[str, int, int, bool]
) -> None:
    text, prompt_tokens, new_tokens, hit_eos = reference
    response = chat(client, model="tiny", temperature=0, max_tokens=12)
    assert response.status_code == 200
    body = response.json()
    assert_schema("CreateChatCompletionResponse", body)
    assert body["id"].startswith("chatcmpl-") and isinstance(body["created"], int)
    assert body == {
        "id": body["id"],
        "object": "chat.completion",
        "created": body["created"],
        "model": "tiny",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop" if hit_eos else "length",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": new_tokens,
            "total_tokens": prompt_tokens + new_tokens,
        },
    }


def test_default_and_omitted_model_are_the_default_model(client: TestClient) -> None:
    for body in ({"model": "default"}, {}):
        response = chat(client, temperature=0, max_tokens=2, **body)
        assert response.status_code == 200
        assert response.json()["model"] == "tiny"
    assert chat(client, model="tiny2", max_tokens=2).json()["model"] == "tiny2"


def test_stream_order_and_content(client: TestClient, reference: tuple[str, int, int, bool]) -> None:
    text, prompt_tokens, new_tokens, hit_eos = reference
    response = chat(
        client,
        model="tiny",
        temperature=0,
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    payloads = sse_data(response.text)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    for chunk in chunks:
        assert_schema("CreateChatCompletionStreamResponse", chunk)
        assert chunk["object"] == "chat.completion.chunk" and chunk["model"] == "tiny"
        assert (chunk["id"], chunk["created"]) == (chunks[0]["id"], chunks[0]["created"])
    first, *content, last, usage = chunks
    assert first["choices"] == [
        {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
    ]
    assert first["usage"] is None
    for chunk in content:
        [choice] = chunk["choices"]
        assert set(choice["delta"]) == {"content"} and choice["delta"]["content"]
        assert choice["finish_reason"] is None and chunk["usage"] is None
    assert "".join(c["choices"][0]["delta"]["content"] for c in content) == text
    assert last["choices"] == [
        {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop" if hit_eos else "length"}
    ]
    assert usage["choices"] == []
    assert usage["usage"] == {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": new_tokens,
        "total_tokens": prompt_tokens + new_tokens,
    }


def test_stream_without_usage_has_no_usage_key(client: TestClient) -> None:
    payloads = sse_data(chat(client, max_tokens=3, stream=True).text)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")


def test_stop_string_is_cut_and_never_sent(client: TestClient, reference: tuple[str, int, int, bool]) -> None:
    text = reference[0]
    stop = text[3:6]
    expected = text[: text.index(stop)]
    body = chat(client, temperature=0, max_tokens=12, stop=[stop, "never-there"]).json()
    assert body["choices"][0]["message"]["content"] == expected
    assert body["choices"][0]["finish_reason"] == "stop"
    payloads = sse_data(chat(client, temperature=0, max_tokens=12, stop=stop, stream=True).text)
    deltas = [json.loads(p)["choices"][0]["delta"].get("content", "") for p in payloads[:-1]]
    assert "".join(deltas) == expected


def test_same_seed_same_text_when_sampling(client: TestClient) -> None:
    def sample(seed: int) -> str:
        body = chat(client, temperature=1.0, top_p=0.9, seed=seed, max_tokens=16).json()
        return str(body["choices"][0]["message"]["content"])

    assert sample(1234) == sample(1234)
    assert sample(1234) != sample(99)


def test_top_k_one_is_greedy(client: TestClient, reference: tuple[str, int, int, bool]) -> None:
    body = chat(client, temperature=1.5, top_k=1, max_tokens=12, seed=5).json()
    assert body["choices"][0]["message"]["content"] == reference[0]


def test_content_parts_and_system_messages(client: TestClient) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Really brief."}]},
        {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]},
    ]
    response = client.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 2})
    assert response.status_code == 200
    assert response.json()["usage"]["completion_tokens"] <= 2


def error(message: str, param: str | None, code: str = "invalid_request") -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}


BAD_BODIES = [
    (
        {"messages": []},
        "messages",
        "invalid value for 'messages': List should have at least 1 item after validation, not 0",
    ),
    ({}, "messages", "missing required parameter 'messages'"),
    (
        {"messages": USER, "temperature": 3},
        "temperature",
        "invalid value for 'temperature': Input should be less than or equal to 2",
    ),
    (
        {"messages": USER, "temperature": -0.5},
        "temperature",
        "invalid value for 'temperature': Input should be greater than or equal to 0",
    ),
    (
        {"messages": USER, "top_p": 1.5},
        "top_p",
        "invalid value for 'top_p': Input should be less than or equal to 1",
    ),
    (
        {"messages": USER, "max_tokens": 0},
        "max_tokens",
        "invalid value for 'max_tokens': Input should be greater than or equal to 1",
    ),
    (
        {"messages": USER, "max_completion_tokens": -1},
        "max_completion_tokens",
        "invalid value for 'max_completion_tokens': Input should be greater than or equal to 1",
    ),
    (
        {"messages": USER, "max_tokens": "many"},
        "max_tokens",
        "invalid value for 'max_tokens': Input should be a valid integer",
    ),
    (
        {"messages": USER, "top_k": -2},
        "top_k",
        "invalid value for 'top_k': Input should be greater than or equal to -1",
    ),
    ({"messages": USER, "frobnicate": True}, "frobnicate", "unknown parameter 'frobnicate'"),
    ({"messages": USER, "n": 0}, "n", "invalid value for 'n': Input should be greater than or equal to 1"),
    ({"messages": USER, "n": 129}, "n", "invalid value for 'n': Input should be less than or equal to 128"),
    ({"messages": USER, "top_logprobs": 2}, "top_logprobs", "'top_logprobs' needs 'logprobs': true"),
    (
        {"messages": USER, "logprobs": True, "top_logprobs": 21},
        "top_logprobs",
        "invalid value for 'top_logprobs': Input should be less than or equal to 20",
    ),
    (
        {"messages": USER, "tools": [{"type": "function", "function": {"name": "bad name"}}]},
        "tools[0]",
        "tools[0] must be {'type': 'function', 'function': {'name': ...}} with a name of letters, digits, "
        "_ or - (64 at most)",
    ),
    (
        {"messages": USER, "functions": [{"name": "f"}]},
        "functions",
        "'functions' = [{'name': 'f'}] is not supported by llmserve yet",
    ),
    (
        {"messages": USER, "stream_options": {"include_usage": True}},
        "stream_options",
        "'stream_options' is only allowed when 'stream' is true",
    ),
    (
        {"messages": USER, "stop": ["ok", ""]},
        "stop",
        "invalid value for 'stop': stop strings must not be empty",
    ),
    (
        {"messages": [{"role": "wizard", "content": "hi"}]},
        "messages[0].role",
        "invalid value for 'messages[0].role': Input should be 'system', 'developer', 'user', 'assistant' or 'tool'",
    ),
    (
        {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "x"}}]}]},
        "messages[0].content",
        "invalid value for 'messages[0].content': content part type 'input_audio' is not supported here; use 'text' and 'image_url' parts",
    ),
    (
        {"messages": [{"role": "user"}], "model": 5},
        "model",
        "invalid value for 'model': Input should be a valid string",
    ),
    ([1, 2], None, "the request body must be a JSON object"),
]


@pytest.mark.parametrize(("body", "param", "message"), BAD_BODIES)
def test_bad_requests_are_400_with_param(
    client: TestClient, body: Any, param: str | None, message: str
) -> None:
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert response.json() == error(message, param)
    assert_schema("ErrorResponse", response.json())


def test_malformed_json_is_400(client: TestClient) -> None:
    response = client.post(
        "/v1/chat/completions", content=b'{"messages": [', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    body = response.json()
    assert body["error"]["message"].startswith("the request body is not valid JSON: Expecting value")
    assert body == error(body["error"]["message"], None)


def test_unknown_model_is_404_never_the_default(client: TestClient) -> None:
    for stream in (False, True):
        response = chat(client, model="gpt-4o", stream=stream)
        assert response.status_code == 404
        assert response.json() == error(
            "The model 'gpt-4o' does not exist. Available models: default, tiny, tiny2.",
            "model",
            "model_not_found",
        )


def test_wrong_route_and_method(client: TestClient) -> None:
    response = client.get("/v1/chat/completions")
    assert response.status_code == 405
    assert response.json() == error("GET is not allowed on /v1/chat/completions", None, "method_not_allowed")
    response = client.post("/v1/nothing-here", json={})
    assert response.status_code == 404
    assert response.json() == error("no endpoint POST /v1/nothing-here", None, "not_found")


def test_prompt_too_long_is_400(client: TestClient) -> None:
    long = [{"role": "user", "content": "Paris " * 400}]
    response = client.post("/v1/chat/completions", json={"messages": long, "stream": True})
    assert response.status_code == 400
    body = response.json()
    assert (
        body["error"]["param"] == "messages" and body["error"]["code"] == "context_length_exceeded"
    )  # as OpenAI
    assert "holds 256 tokens in all" in body["error"]["message"]
