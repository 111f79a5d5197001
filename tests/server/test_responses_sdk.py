"""The official openai SDK's `client.responses` against a live llmserve with a tiny random model, and a
Codex-CLI-style request (tests/data/codex_responses_request.json) replayed over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from model_configs import plain
from paths import DATA
from servers import live_server
from tiny import long_context_copy
from wire import assert_schema

from llmserve.server import create_app

WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}},  # a random model stops in time
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


@pytest.fixture(scope="module")
def base_url(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # room for Codex's tools and instructions
    roomy = long_context_copy(tiny_dir, tmp_path_factory.mktemp("models") / "tiny", positions=16384)
    with live_server(create_app([plain(roomy, "org/tiny")], "org/tiny", preload="none")) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)


def _checked(response: openai.types.responses.Response) -> dict[str, Any]:
    body = response.model_dump(mode="json", exclude_unset=True, by_alias=True)
    assert_schema("Response", body)
    return body


def test_create_retrieve_and_delete(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model="org/tiny", input="Say hi", instructions="Be brief", max_output_tokens=6, temperature=0
    )
    body = _checked(response)
    assert response.status in ("completed", "incomplete") and response.model == "org/tiny"
    assert response.output[0].type == "message" and isinstance(response.output_text, str)
    assert response.usage is not None and 0 < response.usage.output_tokens <= 6
    assert _checked(client.responses.retrieve(response.id)) == body
    items = client.responses.input_items.list(response.id)
    assert [(i.type, i.role) for i in items.data] == [("message", "user")]  # type: ignore[union-attr]
    client.responses.delete(response.id)  # the SDK reads no body (cast_to=None)
    with pytest.raises(openai.NotFoundError) as missing:
        client.responses.retrieve(response.id)
    assert missing.value.code == "not_found"


def test_streamed_matches_whole(client: openai.OpenAI) -> None:
    whole = client.responses.create(model="org/tiny", input="Say hi", max_output_tokens=6, temperature=0)
    events = list(
        client.responses.create(
            model="org/tiny", input="Say hi", max_output_tokens=6, temperature=0, stream=True
        )
    )
    assert events[0].type == "response.created" and events[1].type == "response.in_progress"
    assert events[-1].type in ("response.completed", "response.incomplete")
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == whole.output_text
    assert events[-1].response.output_text == whole.output_text  # type: ignore[union-attr]


def test_stream_helper(client: openai.OpenAI) -> None:
    """`responses.stream` accumulates the events into the final response (which needs `completed`:
    a JSON format makes the tiny model end; greedy, so that it ends the same way every time)."""
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
        "additionalProperties": False,  # no room to wander: the answer is `{"ok": true}` or false
    }
    text: Any = {"format": {"type": "json_schema", "name": "answer", "schema": schema}}
    with client.responses.stream(
        model="org/tiny", input="Fine?", text=text, max_output_tokens=40, temperature=0
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[-1] == "response.completed" and kinds.count("response.output_item.added") == 1
    assert json.loads(final.output_text)["ok"] in (True, False)
    assert final.usage is not None and final.usage.total_tokens > 0


def test_forced_function_call_round_trip(client: openai.OpenAI) -> None:
    first = client.responses.create(
        model="org/tiny",
        input="What is the weather in Paris?",
        tools=[WEATHER, {"type": "web_search"}],
        tool_choice={"type": "function", "name": "get_weather"},
        temperature=0,
        max_output_tokens=80,
    )
    _checked(first)
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and call.call_id.startswith("call_")
    jsonschema.validate(json.loads(call.arguments), WEATHER["parameters"])
    second = client.responses.create(
        model="org/tiny",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 C"}],
        tools=[WEATHER],
        max_output_tokens=8,
    )
    _checked(second)
    assert second.previous_response_id == first.id
    items = client.responses.input_items.list(second.id)
    assert [i.type for i in items.data] == ["function_call_output"]


def test_text_format_json_schema(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
        "additionalProperties": False,
    }
    response = client.responses.create(
        model="org/tiny",
        input="Is it fine?",
        text={"format": {"type": "json_schema", "name": "answer", "schema": schema, "strict": True}},
        max_output_tokens=40,
    )
    _checked(response)
    assert response.status == "completed"
    jsonschema.validate(json.loads(response.output_text), schema)


def test_previous_response_id_continues(client: openai.OpenAI) -> None:
    first = client.responses.create(model="org/tiny", input="My name is Ada.", max_output_tokens=4)
    second = client.responses.create(
        model="org/tiny", input="What is my name?", previous_response_id=first.id, max_output_tokens=4
    )
    assert second.usage is not None and first.usage is not None
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens - 1
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="org/tiny", input="again", previous_response_id=first.id)


def test_codex_style_request(base_url: str) -> None:
    body = json.loads((DATA / "codex_responses_request.json").read_text())
    body["max_output_tokens"] = 8  # a tiny random model: keep it short
    with httpx.stream("POST", f"{base_url}/v1/responses", json=body, timeout=60) as response:
        assert response.status_code == 200
        text = "".join(response.iter_text())
    events = [json.loads(line[len("data: ") :]) for line in text.splitlines() if line.startswith("data: ")]
    assert [e["type"] for e in events[:2]] == ["response.created", "response.in_progress"]
    assert events[-1]["type"] in ("response.completed", "response.incomplete")
    final = events[-1]["response"]
    assert_schema("Response", final)
    assert final["store"] is False and [t["name"] for t in final["tools"]] == ["shell", "update_plan"]
    assert final["parallel_tool_calls"] is False and final["prompt_cache_key"] == body["prompt_cache_key"]
    missing = httpx.get(f"{base_url}/v1/responses/{final['id']}")
    assert missing.status_code == 404  # store: false


def test_codex_cli_0171_request_as_captured(base_url: str) -> None:
    """The body Codex CLI 0.171.0 (`codex exec`) sent, captured on the wire (tests/data/README.md): every
    field and item type it uses is taken. Its texts are cut to 300 characters here, so that its prompt
    fits the tiny model's context; nothing else is changed."""
    body = json.loads((DATA / "codex_0171_request.json").read_text())
    for item in body["input"]:
        for part in item.get("content", []):
            part["text"] = part["text"][:300]
    with httpx.stream(
        "POST", f"{base_url}/v1/responses", json={**body, "model": "org/tiny"}, timeout=60
    ) as response:
        assert response.status_code == 200, response.read()
        text = "".join(response.iter_text())
    events = [json.loads(line[len("data: ") :]) for line in text.splitlines() if line.startswith("data: ")]
    assert events[-1]["type"] in ("response.completed", "response.incomplete")
    final = events[-1]["response"]
    assert_schema("Response", final)
    functions = [t["name"] for t in body["tools"] if t["type"] == "function"]
    assert [t["name"] for t in final["tools"]] == functions  # namespace and web_search are left out
