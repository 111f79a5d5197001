"""POST/GET/DELETE /v1/responses on scripted engines: exact JSON shapes, the stream's event order, the
store, and each parameter's decision (honoured, ignored with a warning, refused). Every body and
event is checked against OpenAI's schemas (openapi.yaml's Response, ResponseStreamEvent,
ResponseItemList)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import pytest
from fakes import Factory, ScriptedEngine, Slowed, assert_cancelled
from model_configs import config
from paths import DATA
from servers import live_server
from starlette.testclient import TestClient
from wire import assert_schema

from llmserve.cli import build_parser, server_options
from llmserve.engine.base import ChatMessage
from llmserve.server import create_app
from llmserve.server.options import ServerOptions
from llmserve.service.responses_store import ResponseStore, StoredResponse

_SCHEMAS = json.loads((DATA / "openai_schemas.json").read_text())["components"]["schemas"]
# The member of ResponseStreamEvent for each event type: a mismatch names what is wrong, not "anyOf".
EVENT_SCHEMAS = {
    _SCHEMAS[name]["properties"]["type"]["enum"][0]: name
    for name in (ref["$ref"].rsplit("/", 1)[1] for ref in _SCHEMAS["ResponseStreamEvent"]["anyOf"])
}
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": True,
}


class Recording(ScriptedEngine):
    """Remembers the messages of every prompt it encodes."""

    def __init__(self, pieces: Sequence[str], **kwargs: Any) -> None:
        super().__init__(pieces, **kwargs)
        self.prompts: list[list[ChatMessage]] = []

    def encode_chat(
        self, messages: Sequence[ChatMessage], tools: Sequence[dict[str, Any]] | None = None
    ) -> list[int]:
        self.prompts.append(list(messages))
        return super().encode_chat(messages, tools)


def _client(pieces: Sequence[str], **kwargs: Any) -> Iterator[tuple[TestClient, Factory]]:
    factory = Factory(lambda c: Recording(pieces, **kwargs))
    options = ServerOptions(responses_store_size=3)
    model = dataclasses.replace(config(-1, "m"), keep_alive=float("inf"))  # one engine for the test
    app = create_app([model], "m", factory=factory, preload="none", options=options)
    with TestClient(app) as client:
        yield client, factory


@pytest.fixture
def plain() -> Iterator[tuple[TestClient, Factory]]:
    yield from _client(["Hel", "lo"])


@pytest.fixture
def calling() -> Iterator[tuple[TestClient, Factory]]:
    yield from _client([CALL])


def create(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/responses", json={"model": "m", **body})
    assert response.status_code == 200, response.text
    out: dict[str, Any] = response.json()
    assert_schema("Response", out)
    return out


def events(client: TestClient, **body: Any) -> list[dict[str, Any]]:
    """The stream's events, each checked: `event:` name = `type`, schema, sequence numbers 0, 1, ..."""
    response = client.post("/v1/responses", json={"model": "m", "stream": True, **body})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    out = []
    for block in response.text.split("\n\n"):
        if not block.strip() or block.startswith(":"):
            continue
        name, data = block.split("\n")
        assert name.startswith("event: ") and data.startswith("data: "), block
        event = json.loads(data[len("data: ") :])
        assert event["type"] == name[len("event: ") :]
        assert_schema(EVENT_SCHEMAS[event["type"]], event)
        out.append(event)
    assert [e["sequence_number"] for e in out] == list(range(len(out)))
    return out


def test_plain_response(plain: tuple[TestClient, Factory]) -> None:
    client, _ = plain
    out = create(client, input="Say hi", instructions="Be brief", metadata={"k": "v"}, temperature=0.5)
    assert out["id"].startswith("resp_") and out["object"] == "response" and out["status"] == "completed"
    (message,) = out["output"]
    assert message["id"].startswith("msg_")
    assert {k: v for k, v in message.items() if k != "id"} == {
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": "Hello", "annotations": [], "logprobs": []}],
    }
    assert out["usage"] == {
        "input_tokens": 6,  # the scripted engine: a token per word and one per message
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 3,  # "Hel", "lo", EOS
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 9,
    }
    assert out["model"] == "m" and out["instructions"] == "Be brief" and out["metadata"] == {"k": "v"}
    assert out["temperature"] == 0.5 and out["store"] is True and out["tool_choice"] == "auto"
    assert out["text"] == {"format": {"type": "text"}, "verbosity": "medium"}
    assert (
        out["error"] is None
        and out["incomplete_details"] is None
        and out["completed_at"] >= out["created_at"]
    )


def test_instructions_and_items_reach_the_model(plain: tuple[TestClient, Factory]) -> None:
    client, factory = plain
    items = [
        {"role": "developer", "content": "Answer in French"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Salut"}]},
        {"role": "user", "content": "Weather?"},
        {
            "type": "function_call",
            "call_id": "call_1",
            "name": "get_weather",
            "arguments": '{"city":"Paris"}',
        },
        {"type": "function_call_output", "call_id": "call_1", "output": "Sunny"},
        {"type": "reasoning", "id": "rs_1", "summary": []},
    ]
    create(client, input=items, instructions="Be brief")
    (prompt,) = factory.engines[0].prompts  # type: ignore[attr-defined]
    assert [(m.role, m.content) for m in prompt] == [
        ("system", "Be brief"),
        ("system", "Answer in French"),
        ("user", "Hi"),
        ("assistant", "Salut"),
        ("user", "Weather?"),
        ("assistant", ""),
        ("tool", "Sunny"),
    ]
    assert prompt[5].tool_calls == (
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        },
    )
    assert prompt[6].tool_call_id == "call_1"


def test_streamed_event_sequence(plain: tuple[TestClient, Factory]) -> None:
    client, _ = plain
    out = events(client, input="Say hi")
    assert [e["type"] for e in out] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert out[0]["response"]["status"] == "in_progress" and out[0]["response"]["output"] == []
    assert out[2]["item"]["status"] == "in_progress" and out[2]["item"]["content"] == []
    item_id = out[2]["item"]["id"]
    assert [e["delta"] for e in out[4:6]] == ["Hel", "lo"]
    assert all(e["item_id"] == item_id and e["output_index"] == 0 for e in out[3:8])
    assert out[6]["text"] == "Hello" and out[7]["part"]["text"] == "Hello"
    assert out[8]["item"]["status"] == "completed"
    final = out[-1]["response"]
    assert final["status"] == "completed" and final["output"] == [out[8]["item"]]
    assert client.get(f"/v1/responses/{final['id']}").json() == final


def test_max_output_tokens_is_incomplete(plain: tuple[TestClient, Factory]) -> None:
    client, _ = plain
    out = create(client, input="Say hi", max_output_tokens=1)
    assert out["status"] == "incomplete" and out["incomplete_details"] == {"reason": "max_output_tokens"}
    assert out["output"][0]["status"] == "incomplete" and out["output"][0]["content"][0]["text"] == "Hel"
    streamed = events(client, input="Say hi", max_output_tokens=1)
    assert streamed[-1]["type"] == "response.incomplete"
    assert streamed[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_function_call_items(calling: tuple[TestClient, Factory]) -> None:
    client, factory = calling
    out = create(client, input="Weather in Paris?", tools=[WEATHER, {"type": "web_search"}])
    (call,) = out["output"]
    assert call["id"].startswith("fc_") and call["call_id"].startswith("call_")
    assert {k: call[k] for k in ("type", "name", "arguments", "status")} == {
        "type": "function_call",
        "name": "get_weather",
        "arguments": '{"city": "Paris"}',
        "status": "completed",
    }
    assert out["tools"] == [WEATHER]  # the function tools llmserve runs; web_search was ignored
    streamed = events(client, input="Weather in Paris?", tools=[WEATHER])
    assert [e["type"] for e in streamed] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert streamed[2]["item"]["arguments"] == "" and streamed[2]["item"]["status"] == "in_progress"
    assert streamed[3]["delta"] == streamed[4]["arguments"] == '{"city": "Paris"}'
    assert streamed[4]["name"] == "get_weather" and streamed[5]["item"]["status"] == "completed"
    # the offered tools reach the model in chat's shape
    assert factory.engines[0].params[0].constraint is None  # type: ignore[attr-defined]


def test_builtin_tools_are_ignored_with_a_warning(
    plain: tuple[TestClient, Factory], caplog: pytest.LogCaptureFixture
) -> None:
    client, _ = plain
    tools = [{"type": "web_search"}, {"type": "local_shell"}, {"type": "custom", "name": "apply_patch"}]
    with caplog.at_level(logging.WARNING, logger="llmserve.service.responses"):
        out = create(client, input="hi", tools=tools, tool_choice="auto")
    assert out["tools"] == [] and out["output"][0]["content"][0]["text"] == "Hello"
    warned = [r.getMessage() for r in caplog.records if r.name == "llmserve.service.responses"]
    assert len(warned) == 3 and "'web_search'" in warned[0] and "'custom'" in warned[2]


def test_text_format_constrains_the_output(plain: tuple[TestClient, Factory]) -> None:
    client, factory = plain
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    text = {"format": {"type": "json_schema", "name": "thing", "schema": schema, "strict": True}}
    out = create(client, input="hi", text=text)
    assert out["text"]["format"] == {"type": "json_schema", "name": "thing", "schema": schema, "strict": True}
    create(client, input="hi", text={"format": {"type": "json_object"}})
    engine = factory.engines[0]
    assert [p.constraint is not None for p in engine.params] == [True, True]  # type: ignore[attr-defined]


def test_store_previous_response_and_input_items(plain: tuple[TestClient, Factory]) -> None:
    client, factory = plain
    first = create(client, input=[{"role": "user", "content": "one"}, {"role": "user", "content": "two"}])
    second = create(client, input="three", previous_response_id=first["id"])
    assert second["previous_response_id"] == first["id"]
    prompt = factory.engines[0].prompts[-1]  # type: ignore[attr-defined]
    assert [(m.role, m.content) for m in prompt] == [
        ("user", "one"),
        ("user", "two"),
        ("assistant", "Hello"),
        ("user", "three"),
    ]
    assert client.get(f"/v1/responses/{first['id']}").json() == first
    listing = client.get(f"/v1/responses/{first['id']}/input_items").json()
    assert_schema("ResponseItemList", listing)
    assert [i["content"][0]["text"] for i in listing["data"]] == ["two", "one"]  # newest first
    assert listing["first_id"] == listing["data"][0]["id"] and listing["has_more"] is False
    assert listing["data"][0] == {
        "id": listing["data"][0]["id"],
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": "two"}],
        "status": "completed",
    }
    page = client.get(f"/v1/responses/{first['id']}/input_items", params={"order": "asc", "limit": 1}).json()
    assert [i["content"][0]["text"] for i in page["data"]] == ["one"] and page["has_more"] is True
    rest = client.get(
        f"/v1/responses/{first['id']}/input_items", params={"order": "asc", "after": page["last_id"]}
    ).json()
    assert [i["content"][0]["text"] for i in rest["data"]] == ["two"] and rest["has_more"] is False
    deleted = client.delete(f"/v1/responses/{first['id']}")
    assert deleted.status_code == 200
    assert deleted.json() == {"id": first["id"], "object": "response", "deleted": True}
    for method, path in (("GET", ""), ("DELETE", ""), ("GET", "/input_items")):
        gone = client.request(method, f"/v1/responses/{first['id']}{path}")
        assert gone.status_code == 404
        assert gone.json() == {
            "error": {
                "message": f"Response with id '{first['id']}' not found.",
                "type": "invalid_request_error",
                "param": None,
                "code": "not_found",
            }
        }
        assert_schema("ErrorResponse", gone.json())
    again = client.post("/v1/responses", json={"input": "x", "previous_response_id": first["id"]})
    assert again.status_code == 404 and again.json()["error"]["param"] == "previous_response_id"


def test_store_false_keeps_nothing(plain: tuple[TestClient, Factory]) -> None:
    client, _ = plain
    out = create(client, input="hi", store=False)
    assert out["store"] is False
    assert client.get(f"/v1/responses/{out['id']}").status_code == 404


def test_store_is_bounded_by_size_and_time() -> None:
    now = [0.0]
    store = ResponseStore(2, 10.0, clock=lambda: now[0])
    for name in ("a", "b", "c"):
        store.put(StoredResponse({"id": name, "output": []}, [], []))
    assert len(store) == 2 and store.get("b", None).response["id"] == "b"
    with pytest.raises(Exception, match="'a' not found"):
        store.get("a", None)
    now[0] = 10.0
    assert len(store) == 0
    ResponseStore(0, 10.0).put(StoredResponse({"id": "x", "output": []}, [], []))


def test_a_failure_after_the_start_is_response_failed() -> None:
    for client, _ in _client(["a", "b", "c"], fail_at_step=2):
        out = events(client, input="hi")
        assert [e["type"] for e in out][-2:] == ["response.output_text.delta", "response.failed"]
        failed = out[-1]["response"]
        assert failed["status"] == "failed" and failed["error"]["code"] == "server_error"
        assert "crashed" in failed["error"]["message"]
        whole = client.post("/v1/responses", json={"input": "hi"})
        assert whole.status_code == 500 and whole.json()["error"]["type"] == "server_error"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "hi", "background": True}, "background"),
        ({"input": "hi", "conversation": "conv_1"}, "conversation"),
        ({"input": "hi", "top_logprobs": 3}, "top_logprobs"),
        ({"input": "hi", "temperature": 3}, "temperature"),
        ({"input": "hi", "wat": 1}, "wat"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            "input[0].content[0]",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
            "input[0].content[0].image_url",
        ),
        (
            {"input": "hi", "tool_choice": {"type": "function", "name": "nope"}, "tools": [WEATHER]},
            "tool_choice",
        ),
        ({"input": "hi", "tool_choice": {"type": "web_search_preview"}}, "tool_choice"),
        ({"input": "hi", "text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format"),
        ({"input": "hi", "model": "gpt-5"}, "model"),
        ({}, "input"),
    ],
)
def test_refused_parameters(plain: tuple[TestClient, Factory], body: dict[str, Any], param: str) -> None:
    client, _ = plain
    response = client.post("/v1/responses", json=body)
    assert response.status_code in (400, 404), response.text
    assert response.json()["error"]["param"] == param
    assert_schema("ErrorResponse", response.json())


def test_accepted_and_ignored_parameters(plain: tuple[TestClient, Factory]) -> None:
    client, _ = plain
    out = create(
        client,
        input="hi",
        reasoning={"effort": "high", "summary": "auto"},
        include=["reasoning.encrypted_content"],
        prompt_cache_key="k",
        truncation="auto",
        user="u",
        safety_identifier="s",
        service_tier="auto",
        parallel_tool_calls=False,
        stream_options={"include_obfuscation": False},
        text={"verbosity": "low"},
    )
    assert out["reasoning"] == {"effort": "high", "summary": "auto"} and out["prompt_cache_key"] == "k"
    assert out["truncation"] == "auto" and out["user"] == "u" and out["parallel_tool_calls"] is False


PNG = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


def test_images_take_the_chat_path(plain: tuple[TestClient, Factory]) -> None:
    """An `input_image` is chat's `image_url` part: decoded the same way, the same message to the engine."""
    client, factory = plain
    parts = [{"type": "input_text", "text": "What is this?"}, {"type": "input_image", "image_url": PNG}]
    create(client, input=[{"role": "user", "content": parts}])
    chat_parts = [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": PNG}}]
    chat = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": chat_parts}]})
    assert chat.status_code == 200
    via_responses, via_chat = factory.engines[0].prompts  # type: ignore[attr-defined]
    assert via_responses == via_chat and len(via_responses[0].images) == 1
    assert via_responses[0].images[0].startswith(b"\x89PNG")
    bad = client.post(
        "/v1/responses",
        json={
            "input": [{"role": "user", "content": [{**parts[1], "image_url": "data:image/png;base64,@@"}]}]
        },
    )
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"


def test_store_flags() -> None:
    parser = build_parser()
    args = parser.parse_args(
        ["plain", "-m", "a/b", "--responses-store-size", "0", "--responses-store-ttl", "60"]
    )
    options = server_options(args)
    assert (options.responses_store_size, options.responses_store_ttl) == (0, 60.0)
    defaults = server_options(parser.parse_args(["plain", "-m", "a/b"]))
    assert (defaults.responses_store_size, defaults.responses_store_ttl) == (1000, 3600.0)


@pytest.mark.parametrize("stream", [True, False])
def test_client_disconnect_cancels_the_generation(stream: bool) -> None:
    factory = Factory(lambda c: Slowed(ScriptedEngine(["x"] * 300, context=1000), 0.02))
    model = dataclasses.replace(config(-1, "m"), keep_alive=float("inf"))
    app = create_app([model], "m", factory=factory, preload="none")

    async def hang_up_after_a_delta(url: str) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            body = {"input": "hi", "stream": True}
            async with http.stream("POST", "/v1/responses", json=body) as response:
                async for line in response.aiter_lines():
                    if line == "event: response.output_text.delta":
                        break

    with live_server(app) as url:
        if stream:
            asyncio.run(hang_up_after_a_delta(url))
        else:
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(f"{url}/v1/responses", json={"input": "hi"}, timeout=httpx.Timeout(60, read=1.0))
        assert_cancelled(factory.engines[0], max_steps=150)


def test_keys_body_limit_and_metrics_as_on_chat() -> None:
    factory = Factory(lambda c: ScriptedEngine(["Hel", "lo"]))
    model = dataclasses.replace(config(-1, "m"), keep_alive=float("inf"))
    options = ServerOptions(api_keys=("sekret",), max_request_bytes=2000)
    app = create_app([model], "m", factory=factory, preload="none", options=options)
    with TestClient(app) as client:
        anonymous = client.post("/v1/responses", json={"input": "hi"})
        assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "invalid_api_key"
        for headers in ({"Authorization": "Bearer sekret"}, {"x-api-key": "sekret"}):
            assert client.post("/v1/responses", json={"input": "hi"}, headers=headers).status_code == 200
        big = client.post("/v1/responses", json={"input": "x" * 3000}, headers={"x-api-key": "sekret"})
        assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"
        metrics = client.get("/metrics", headers={"x-api-key": "sekret"}).text
        assert 'llmserve_requests_total{endpoint="/v1/responses",model="m",version="1"} 2.0' in metrics


def test_text_and_a_call_with_tools_offered() -> None:
    """With tools offered the text is held to the end (as in chat): one delta, then the call."""
    for client, _ in _client(["Sure. ", CALL]):
        out = create(client, input="Weather?", tools=[WEATHER])
        assert [item["type"] for item in out["output"]] == ["message", "function_call"]
        assert out["output"][0]["content"][0]["text"] == "Sure."
        streamed = events(client, input="Weather?", tools=[WEATHER])
        kinds = [e["type"] for e in streamed]
        assert kinds.count("response.output_text.delta") == 1
        assert kinds.index("response.output_item.done") < kinds.index(
            "response.function_call_arguments.delta"
        )
        added = [e for e in streamed if e["type"] == "response.output_item.added"]
        assert [(e["output_index"], e["item"]["type"]) for e in added] == [
            (0, "message"),
            (1, "function_call"),
        ]
        assert streamed[-1]["response"]["output"][1]["name"] == "get_weather"
