"""API keys, the body limit, CORS, request ids and the access log: on every route, present and future."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_run import piped
from model_configs import plain
from servers import live_server
from starlette.testclient import TestClient

from llmserve.cli import build_parser, public_warning, server_options
from llmserve.server import ServerOptions, create_app

USER = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def client(tiny_dir: Path) -> Iterator[TestClient]:
    options = ServerOptions(api_keys=("key-one", "key-two"), max_request_bytes=2000)
    with TestClient(
        create_app([plain(tiny_dir, "tiny")], "tiny", preload="none", options=options)
    ) as test_client:
        yield test_client


def unauthorized(message: str) -> dict[str, object]:
    return {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }


HINT = "send it as 'Authorization: Bearer KEY' or 'x-api-key: KEY'"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/models"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/models/unload"),
        ("GET", "/v1/models/tiny"),
        ("GET", "/v1/not-a-route"),
        ("GET", "/v2/anything"),
        ("GET", "/metrics"),
    ],
)
def test_every_route_but_health_needs_a_key(client: TestClient, method: str, path: str) -> None:
    def expected(message: str) -> dict[str, Any]:  # /v2 errors in the Open Inference Protocol's shape
        return {"error": message} if path.startswith("/v2") else unauthorized(message)

    response = client.request(method, path)
    assert response.status_code == 401
    assert response.json() == expected(f"no API key was given: {HINT}")
    response = client.request(method, path, headers={"Authorization": "Bearer key-three"})
    assert response.status_code == 401
    assert response.json() == expected(f"the API key is not valid: {HINT}")


def test_the_right_key_in_either_header_works(client: TestClient) -> None:
    assert client.get("/health").status_code == 200
    assert client.get("/v1/models", headers={"Authorization": "Bearer key-two"}).status_code == 200
    assert client.get("/v1/models", headers={"x-api-key": "key-one"}).status_code == 200
    body = {"messages": USER, "max_tokens": 2}
    assert client.post("/v1/chat/completions", json=body, headers={"x-api-key": "key-one"}).status_code == 200


def test_a_body_over_the_limit_is_413(client: TestClient) -> None:
    auth = {"x-api-key": "key-one"}
    big = {"messages": [{"role": "user", "content": "x" * 3000}]}
    expected = {
        "error": {
            "message": "the request body is larger than the server's limit of 2000 bytes",
            "type": "invalid_request_error",
            "param": None,
            "code": "request_too_large",
        }
    }
    response = client.post("/v1/chat/completions", json=big, headers=auth)
    assert (response.status_code, response.json()) == (413, expected)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit counts the bytes as they come
        yield b'{"messages": [{"role": "user", "content": "'
        yield b"y" * 3000
        yield b'"}]}'

    response = client.post("/v1/chat/completions", content=chunks(), headers=auth)
    assert (response.status_code, response.json()) == (413, expected)


def test_request_ids_and_one_access_log_line(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    auth = {"x-api-key": "key-one"}
    generated = client.get("/v1/models", headers=auth).headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    assert client.get("/health", headers={"X-Request-Id": "bad id with spaces"}).headers["x-request-id"] != (
        "bad id with spaces"
    )
    with caplog.at_level(logging.INFO, logger="llmserve.access"):
        response = client.post(
            "/v1/chat/completions",
            json={"messages": USER, "max_tokens": 3, "stream": True},
            headers={**auth, "X-Request-Id": "req-42"},
        )
    assert response.headers["x-request-id"] == "req-42"
    [line] = [r.getMessage() for r in caplog.records if r.name == "llmserve.access"]
    assert re.fullmatch(
        r"request_id=req-42 method=POST path=/v1/chat/completions status=200 tenant=--api-key model=tiny "
        r"prompt_tokens=\d+ completion_tokens=[1-3] ttft_ms=\d+ total_ms=\d+ complete=true",
        line,
    ), line
    assert "key-one" not in caplog.text


def test_cors_is_off_unless_asked_for(tiny_dir: Path) -> None:
    preflight = {"Origin": "http://ui.example", "Access-Control-Request-Method": "POST"}
    with TestClient(create_app([plain(tiny_dir, "tiny")], "tiny", preload="none")) as client:
        assert (
            "access-control-allow-origin"
            not in client.get("/health", headers={"Origin": "http://ui.example"}).headers
        )
    options = ServerOptions(cors_origins=("http://ui.example",), api_keys=("k",))
    with TestClient(create_app([plain(tiny_dir, "tiny")], "tiny", preload="none", options=options)) as client:
        response = client.options("/v1/chat/completions", headers=preflight)
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "http://ui.example"
        response = client.get("/v1/models", headers={"Origin": "http://ui.example", "x-api-key": "k"})
        assert response.headers["access-control-allow-origin"] == "http://ui.example"


def test_cli_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMSERVE_API_KEY", "from-env")
    args = build_parser().parse_args(
        [
            "--api-key",
            "a",
            "plain",
            "-m",
            "x/y",
            "--api-key",
            "b",
            "--cors-origins",
            "http://u.example, *",
            "--max-request-bytes",
            "1000",
        ]
    )
    assert server_options(args) == ServerOptions(
        api_keys=("b", "from-env"), cors_origins=("http://u.example", "*"), max_request_bytes=1000
    )
    assert public_warning("127.0.0.1", ServerOptions()) is None
    assert public_warning("0.0.0.0", ServerOptions(api_keys=("k",))) is None
    assert public_warning("0.0.0.0", ServerOptions()) == (
        "listening on 0.0.0.0 without an API key: anyone who can reach this address can use the models "
        "(set --api-key or LLMSERVE_API_KEY)"
    )


def test_the_chat_sends_its_api_key(tiny_dir: Path) -> None:
    options = ServerOptions(api_keys=("secret",))
    with live_server(create_app([plain(tiny_dir, "tiny")], "tiny", preload="none", options=options)) as url:
        result = piped("/max_tokens 2\nhi\n", "chat", "--url", url, "--api-key", "secret")
        assert result.returncode == 0 and result.stderr == ""
        assert result.stdout.splitlines()[0] == "(max_tokens = 2)"
        denied = piped("hi\n", "chat", "--url", url)
        assert denied.stderr.startswith("error: no API key was given")
