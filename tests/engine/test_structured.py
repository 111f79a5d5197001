"""response_format: JSON enforced by constrained decoding (llguidance). A random-weight model still
answers with JSON that parses and validates; invalid schemas are 400s before anything is queued."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from model_configs import plain
from starlette.testclient import TestClient
from wire import sse_data

from llmserve.server import create_app

USER = [{"role": "user", "content": "Describe a person."}]
SCHEMA = {
    "type": "object",
    "properties": {
        "ok": {"type": "boolean"},
        "size": {"enum": ["small", "large"]},
        "count": {"type": "integer", "minimum": 0, "maximum": 9},
    },
    "required": ["ok", "size", "count"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def client(tiny_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app([plain(tiny_dir, "tiny")], "tiny", preload="none")) as test_client:
        yield test_client


def schema_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}}


@pytest.mark.parametrize("seed", range(6))
def test_sampled_output_always_validates(client: TestClient, seed: int) -> None:
    body = {
        "messages": USER,
        "temperature": 1.0,
        "seed": seed,
        "max_tokens": 60,
        "response_format": schema_format(SCHEMA),
    }
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "stop"
    jsonschema.validate(json.loads(choice["message"]["content"]), SCHEMA)


def test_streamed_output_validates_too(client: TestClient) -> None:
    body = {
        "messages": USER,
        "temperature": 0,
        "max_tokens": 60,
        "stream": True,
        "response_format": schema_format(SCHEMA),
    }
    chunks = [json.loads(d) for d in sse_data(client.post("/v1/chat/completions", json=body).text)[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    jsonschema.validate(json.loads(text), SCHEMA)


def test_json_object_is_an_object(client: TestClient) -> None:
    tight = {
        "type": "object",
        "properties": {"a": {"type": "boolean"}},
        "required": ["a"],
        "additionalProperties": False,
    }
    free = client.post(
        "/v1/chat/completions",
        json={
            "messages": USER,
            "temperature": 0,
            "max_tokens": 200,
            "response_format": {"type": "json_object"},
        },
    )
    assert free.status_code == 200
    content = free.json()["choices"][0]["message"]["content"]
    assert content.startswith("{")  # a random model may run out of tokens inside a long object
    if free.json()["choices"][0]["finish_reason"] == "stop":
        assert isinstance(json.loads(content), dict)
    text = client.post(
        "/v1/chat/completions",
        json={"messages": USER, "temperature": 0, "max_tokens": 20, "response_format": schema_format(tight)},
    )
    assert json.loads(text.json()["choices"][0]["message"]["content"]) in ({"a": True}, {"a": False})


@pytest.mark.parametrize(
    ("response_format", "message"),
    [
        (schema_format({"type": "objekt"}), "invalid JSON schema: "),
        (
            schema_format({"type": "object", "properties": {"x": {"$ref": "#/nowhere"}}}),
            "invalid JSON schema: ",
        ),
        ({"type": "json_schema"}, "invalid value for 'response_format': 'json_schema' is required"),
        ({"type": "yaml"}, "invalid value for 'response_format.type'"),
        (
            {"type": "json_schema", "json_schema": {"name": "bad name!", "schema": {}}},
            "invalid value for 'response_format.json_schema.name'",
        ),
    ],
)
def test_invalid_formats_are_400s(client: TestClient, response_format: dict[str, Any], message: str) -> None:
    response = client.post(
        "/v1/chat/completions", json={"messages": USER, "response_format": response_format}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["message"].startswith(message) and error["param"].startswith("response_format"), error


def test_text_format_is_plain_text(client: TestClient) -> None:
    plain_body = {"messages": USER, "temperature": 0, "max_tokens": 8}
    a = client.post("/v1/chat/completions", json=plain_body).json()["choices"][0]["message"]["content"]
    b = client.post("/v1/chat/completions", json={**plain_body, "response_format": {"type": "text"}}).json()
    assert b["choices"][0]["message"]["content"] == a
