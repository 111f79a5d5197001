"""The Ollama routes on scripted engines: the exact NDJSON sequence, a failure after the first line,
names with tags and versions, load/unload by empty requests, and how messages and options become a
chat request (tool-call ids, images, num_predict)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fakes import Factory, ScriptedEngine, scripted
from model_configs import model
from ollama_wire import assert_ollama
from starlette.testclient import TestClient

from llmserve.errors import InvalidRequest
from llmserve.protocol.ollama import Message, Options
from llmserve.server import create_app
from llmserve.service.ollama_requests import chat_messages, sampling

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def client() -> Iterator[TestClient]:
    models = [model("m"), model("v", "1"), model("v", "2")]
    app = create_app(models, "m", factory=scripted(["a", "b", "c"]), preload="none")
    with TestClient(app) as opened:
        yield opened


def lines(response: Any) -> list[dict[str, Any]]:
    return [json.loads(line) for line in response.text.splitlines()]


def test_a_chat_stream_is_one_line_per_piece_then_the_end(client: TestClient) -> None:
    response = client.post("/api/chat", json={"model": "m", "messages": HI})
    assert response.status_code == 200 and response.headers["content-type"] == "application/x-ndjson"
    got = lines(response)
    assert [(g["message"], g["done"]) for g in got] == [
        ({"role": "assistant", "content": "a"}, False),
        ({"role": "assistant", "content": "b"}, False),
        ({"role": "assistant", "content": "c"}, False),
        ({"role": "assistant", "content": ""}, True),
    ]
    end = got[-1]
    assert (end["done_reason"], end["prompt_eval_count"], end["eval_count"]) == ("stop", 2, 4)
    assert all(
        end[k] >= 0 for k in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration")
    )
    assert end["total_duration"] >= end["load_duration"] and end["created_at"].endswith("Z")
    for line in got[:-1]:
        assert_ollama("ChatStreamEvent", line)
    assert_ollama("ChatResponse", end)


def test_num_predict_ends_with_length(client: TestClient) -> None:
    body = {"model": "m", "prompt": "hi", "stream": False, "options": {"num_predict": 2}}
    answer = client.post("/api/generate", json=body).json()
    assert (answer["response"], answer["done_reason"], answer["eval_count"]) == ("ab", "length", 2)
    assert_ollama("GenerateResponse", answer)


def test_a_failure_after_the_first_line_is_an_error_line() -> None:
    factory = Factory(lambda config: ScriptedEngine(["a", "b", "c"], fail_at_step=3))
    with TestClient(create_app([model("m")], "m", factory=factory, preload="none")) as client:
        response = client.post("/api/chat", json={"model": "m", "messages": HI})
    got = lines(response)
    assert response.status_code == 200 and [g.get("message", {}).get("content") for g in got[:-1]] == [
        "a",
        "b",
    ]
    assert list(got[-1]) == ["error"] and "crashed" in got[-1]["error"]


def test_names_with_tags_and_versions(client: TestClient) -> None:
    tags = [m["name"] for m in client.get("/api/tags").json()["models"]]
    assert tags == ["m:latest", "v:1", "v:latest", "v:2"]
    for name, served in (("m:latest", "m"), ("v", "v@2"), ("v:latest", "v@2"), ("v:1", "v@1")):
        answer = client.post("/api/generate", json={"model": name, "prompt": "hi", "stream": False}).json()
        assert answer["model"] == name and answer["done"], answer
        status = client.post("/v1/models/status", json={"model_id": served}).json()
        assert status["status"] == "loaded", (name, status)
    missing = client.post("/api/generate", json={"model": "v:3", "prompt": "hi"})
    assert missing.status_code == 404 and list(missing.json()) == ["error"]


def test_empty_requests_load_and_unload(client: TestClient) -> None:
    loaded = client.post("/api/generate", json={"model": "m"}).json()
    assert (loaded["done_reason"], loaded["response"], loaded["done"]) == ("load", "", True)
    assert client.post("/v1/models/status", json={"model_id": "m"}).json()["status"] == "loaded"
    ps = client.get("/api/ps").json()["models"]
    assert [p["name"] for p in ps] == ["m:latest"] and ps[0]["size"] == 1000
    assert_ollama("PsResponse", {"models": ps})
    gone = client.post("/api/chat", json={"model": "m", "messages": [], "keep_alive": "0s"}).json()
    assert (gone["done_reason"], gone["message"]) == ("unload", {"role": "assistant", "content": ""})
    assert client.post("/v1/models/status", json={"model_id": "m"}).json()["status"] == "unloaded"
    assert client.get("/api/ps").json() == {"models": []}


def test_unsupported_generate_fields_are_400s(client: TestClient) -> None:
    for field, value in (("template", "{{ .Prompt }}"), ("suffix", "end"), ("context", [1, 2])):
        response = client.post("/api/generate", json={"model": "m", "prompt": "hi", field: value})
        assert response.status_code == 400 and field in response.json()["error"]
    response = client.post(
        "/api/generate", json={"model": "m", "prompt": "hi", "raw": True, "format": "json"}
    )
    assert response.status_code == 400


def test_tool_calls_get_ids_that_their_results_answer() -> None:
    history = [
        Message.model_validate({"role": "user", "content": "weather?"}),
        Message.model_validate(
            {
                "role": "assistant",
                "tool_calls": [
                    {"function": {"name": "weather", "arguments": {"city": "Paris"}}},
                    {"function": {"name": "time", "arguments": {}}},
                ],
            }
        ),
        Message.model_validate({"role": "tool", "tool_name": "time", "content": "noon"}),
        Message.model_validate({"role": "tool", "content": "sunny"}),
    ]
    out = chat_messages(history)
    calls = out[1]["tool_calls"]
    assert [c["id"] for c in calls] == ["call_1_0", "call_1_1"]
    assert calls[0]["function"] == {"name": "weather", "arguments": '{"city": "Paris"}'}
    assert out[2] == {"role": "tool", "tool_call_id": "call_1_1", "content": "noon"}  # by its tool_name
    assert out[3] == {"role": "tool", "tool_call_id": "call_1_0", "content": "sunny"}  # the one left


def test_images_become_image_parts_of_the_user_message() -> None:
    out = chat_messages([Message.model_validate({"role": "user", "content": "what?", "images": ["iVBOR"]})])
    assert out == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what?"},
                {"type": "image_url", "image_url": {"url": "data:image;base64,iVBOR"}},
            ],
        }
    ]
    with pytest.raises(InvalidRequest):
        chat_messages([Message.model_validate({"role": "assistant", "content": "x", "images": ["iVBOR"]})])


def test_options_map_onto_the_sampling_fields() -> None:
    options = Options.model_validate(
        {
            "temperature": 0.5,
            "top_k": 3,
            "repeat_penalty": 1.1,
            "num_predict": 7,
            "stop": ["x"],
            "num_thread": 8,
        }
    )
    assert sampling(options) == {
        "temperature": 0.5,
        "top_k": 3,
        "repetition_penalty": 1.1,
        "max_tokens": 7,
        "stop": ["x"],
    }
    assert options.ignored() == ["num_thread"]
    assert "max_tokens" not in sampling(Options.model_validate({"num_predict": -1}))
    with pytest.raises(InvalidRequest):
        sampling(Options.model_validate({"num_predict": 0}))
