"""What every generation API shares, checked on each of them at once: chat completions, Responses,
Anthropic Messages, Ollama chat and generate. API keys (Bearer and x-api-key), the body limit, request
ids, the drain's 503, the metrics' endpoint label, and disconnect cancellation (streamed or not), each
answered in the API's own error shape."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fakes import Factory, ScriptedEngine
from model_configs import model
from servers import live_server
from starlette.testclient import TestClient

from llmserve.server import create_app
from llmserve.server.options import ServerOptions

HI = [{"role": "user", "content": "hi"}]
CALLS: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {"model": "m", "messages": HI},
    "/v1/responses": {"model": "m", "input": "hi"},
    "/v1/messages": {"model": "m", "max_tokens": 8, "messages": HI},
    "/api/chat": {"model": "m", "messages": HI, "stream": False},
    "/api/generate": {"model": "m", "prompt": "hi", "stream": False},
}


def message_of(path: str, body: Any) -> str:
    """The error message, read from the API's own error shape (which must be exactly that shape)."""
    if path.startswith("/api/"):
        assert list(body) == ["error"]
        return str(body["error"])
    if path.startswith("/v1/messages"):
        assert body["type"] == "error" and set(body["error"]) == {"type", "message"}
        return str(body["error"]["message"])
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return str(body["error"]["message"])


def app(**options: Any) -> Any:
    factory = Factory(lambda config: ScriptedEngine(["a", "b", "c"]))
    return create_app([model("m")], "m", factory=factory, preload="none", options=ServerOptions(**options))


@pytest.mark.parametrize("path", list(CALLS))
def test_api_keys_body_limit_and_request_ids(path: str) -> None:
    with TestClient(app(api_keys=("k",), max_request_bytes=2000)) as client:
        refused = client.post(path, json=CALLS[path])
        assert refused.status_code == 401 and "API key" in message_of(path, refused.json())
        for headers in ({"Authorization": "Bearer k"}, {"x-api-key": "k"}):
            answered = client.post(path, json=CALLS[path], headers={**headers, "X-Request-Id": "abc-123"})
            assert answered.status_code == 200, answered.text
            assert answered.headers["X-Request-Id"] == "abc-123"
        big = client.post(path, json={**CALLS[path], "user": "x" * 5000}, headers={"x-api-key": "k"})
        assert big.status_code == 413 and "2000" in message_of(path, big.json())


@pytest.mark.parametrize("path", list(CALLS))
def test_a_draining_server_refuses_new_work_in_each_shape(path: str) -> None:
    with TestClient(app()) as client:
        client.app.state.registry.begin_drain(30).cancel()  # type: ignore[attr-defined]
        response = client.post(path, json=CALLS[path])
        assert response.status_code == 503 and response.headers["Retry-After"] == "5"
        assert "shutting down" in message_of(path, response.json())


def test_each_endpoint_is_its_own_metrics_label() -> None:
    with TestClient(app()) as client:
        for path, body in CALLS.items():
            assert client.post(path, json=body).status_code == 200
        metrics = client.get("/metrics").text
    for path in CALLS:
        assert f'llmserve_requests_total{{endpoint="{path}",model="m",version="1"}} 1.0' in metrics


@pytest.fixture(scope="module")
def slow_server() -> Iterator[tuple[str, Factory]]:
    factory = Factory(lambda config: ScriptedEngine(["a"] * 400, context=1000, step_delay=0.02))
    with live_server(create_app([model("m")], "m", factory=factory, preload="all")) as url:
        yield url, factory


@pytest.mark.parametrize("path", ["/v1/responses", "/v1/messages", "/api/chat", "/api/generate"])
@pytest.mark.parametrize("stream", [True, False])
def test_a_client_that_goes_away_cancels_its_generation(
    slow_server: tuple[str, Factory], path: str, stream: bool
) -> None:
    url, factory = slow_server
    engine = factory.engines[-1]
    before = len(engine.released)
    body = {**CALLS[path], "stream": stream}
    if path == "/v1/messages":
        body["max_tokens"] = 400
    with httpx.Client(base_url=url, timeout=30) as http:
        if stream:
            with http.stream("POST", path, json=body) as response:
                next(response.iter_raw())  # the stream has started
        else:
            with pytest.raises(httpx.ReadTimeout):
                http.post(path, json=body, timeout=0.5)
    deadline = time.monotonic() + 10
    while len(engine.released) == before:
        assert time.monotonic() < deadline, "the generation ran on after its client left"
        time.sleep(0.05)
