"""Tenants through the official clients, each against its own API on a live server: the openai, anthropic
and ollama Python clients see a model outside their key's scope as their permission error, a used-up
quota as their rate-limit error (with OpenAI's headers), and list only their key's models."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import anthropic
import ollama
import openai
import pytest
from model_configs import plain
from servers import live_server

from llmserve.config.keys import load_keys
from llmserve.server import ServerOptions, create_app

KEYS = {
    "alice": {"key": "sk-alice", "models": ["tiny"]},
    "o": {"key": "sk-o", "models": ["tiny"], "requests_per_minute": 1},
    "a": {"key": "sk-a", "models": ["tiny"], "requests_per_minute": 1},
    "l": {"key": "sk-l", "models": ["tiny"], "requests_per_minute": 1},
}
USER = [{"role": "user", "content": "hi"}]
NOT_ALLOWED = "the key of 'alice' may not use the model 'tiny2'"


@pytest.fixture(scope="module")
def base_url(tiny_dir: Path, tiny_dir2: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = tmp_path_factory.mktemp("keys") / "keys.json"
    path.write_text(json.dumps(KEYS))
    models = [plain(tiny_dir, "tiny"), plain(tiny_dir2, "tiny2")]
    app = create_app(models, "tiny", preload="none", options=ServerOptions(keys=load_keys(path)))
    with live_server(app) as url:
        yield url


def test_openai_client(base_url: str) -> None:
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key="sk-alice", max_retries=0) as client:
        _openai_scope(client)
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key="sk-o", max_retries=0) as limited:
        _openai_limit(limited)


def _openai_scope(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == ["default", "tiny"]
    with pytest.raises(openai.PermissionDeniedError) as denied:
        client.chat.completions.create(model="tiny2", messages=USER)  # type: ignore[arg-type]
    assert (denied.value.status_code, denied.value.code, denied.value.param) == (
        403,
        "model_not_allowed",
        "model",
    )
    assert denied.value.message == f"Error code: 403 - {NOT_ALLOWED}"


def _openai_limit(limited: openai.OpenAI) -> None:
    raw = limited.chat.completions.with_raw_response.create(model="tiny", messages=USER, max_tokens=2)  # type: ignore[arg-type]
    assert (
        raw.headers["x-ratelimit-limit-requests"] == "1"
        and raw.headers["x-ratelimit-remaining-requests"] == "0"
    )
    assert raw.parse().choices[0].finish_reason in ("stop", "length")
    with pytest.raises(openai.RateLimitError) as over:
        limited.chat.completions.create(model="tiny", messages=USER, max_tokens=2)  # type: ignore[arg-type]
    assert (over.value.code, over.value.type) == ("rate_limit_exceeded", "requests")
    assert int(over.value.response.headers["retry-after"]) >= 50  # the first request leaves the minute
    assert over.value.response.headers["x-ratelimit-remaining-requests"] == "0"


def test_anthropic_client(base_url: str) -> None:
    with anthropic.Anthropic(base_url=base_url, api_key="sk-alice", max_retries=0) as client:
        with pytest.raises(anthropic.PermissionDeniedError) as denied:
            client.messages.create(model="tiny2", max_tokens=2, messages=USER)  # type: ignore[arg-type]
        assert denied.value.body == {
            "type": "error",
            "error": {"type": "permission_error", "message": NOT_ALLOWED},
        }
    with anthropic.Anthropic(base_url=base_url, api_key="sk-a", max_retries=0) as limited:
        answer = limited.messages.with_raw_response.create(model="tiny", max_tokens=2, messages=USER)  # type: ignore[arg-type]
        assert answer.headers["x-ratelimit-remaining-requests"] == "0"
        with pytest.raises(anthropic.RateLimitError) as over:
            limited.messages.create(model="tiny", max_tokens=2, messages=USER)  # type: ignore[arg-type]
        assert over.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]


@pytest.fixture
def ollama_clients(base_url: str) -> Iterator[tuple[ollama.Client, ollama.Client]]:
    clients = [
        ollama.Client(host=base_url, headers={"Authorization": f"Bearer {k}"}) for k in ("sk-alice", "sk-l")
    ]
    yield clients[0], clients[1]
    for client in clients:
        client._client.close()  # the client has no close() of its own


def test_ollama_client(ollama_clients: tuple[ollama.Client, ollama.Client]) -> None:
    client, limited = ollama_clients
    assert [m.model for m in client.list().models] == ["tiny:latest"]
    with pytest.raises(ollama.ResponseError) as denied:
        client.chat(model="tiny2", messages=USER)
    assert (denied.value.status_code, denied.value.error) == (403, NOT_ALLOWED)
    assert limited.chat(model="tiny", messages=USER, options={"num_predict": 2}).done
    with pytest.raises(ollama.ResponseError) as over:
        limited.chat(model="tiny", messages=USER)
    assert over.value.status_code == 429 and over.value.error.startswith("Rate limit reached for 'l'")
