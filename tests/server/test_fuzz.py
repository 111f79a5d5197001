"""schemathesis against llmserve's own /openapi.json (generated from the wire types), on a live server
with a tiny model: zero 5xx and zero responses that violate the document, on every operation. Then a
corpus of hostile bodies (bad encodings, lone surrogates, deep nesting, numbers out of range, lax types)
on every route that reads a body, /v2 included: each a 4xx in the route's own error shape."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from model_configs import plain
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from servers import live_server
from starlette.routing import Route

from llmserve.server import create_app

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def server(tiny_dir: Path) -> Iterator[str]:
    app = create_app([plain(tiny_dir, "tiny")], "tiny", preload="default")
    with live_server(app) as url:
        yield url


@pytest.fixture(scope="module")
def api_schema(server: str) -> Any:
    return schemathesis.openapi.from_url(f"{server}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_every_operation(case: Any) -> None:
    case.call_and_validate(checks=CHECKS)


def _posts() -> list[str]:
    """Every POST route of the app, present and future, with the model's name and version filled in."""
    app = create_app([plain(Path("tiny"), "tiny")], "tiny", preload="none")
    paths = [r.path for r in app.routes if isinstance(r, Route) and "POST" in (r.methods or ())]
    return [p.replace("{name:path}", "tiny").replace("{version}", "1") for p in paths]


_DEEP = b"[" * 5000 + b"]" * 5000
# Whole bodies that are not JSON as RFC 8259 has it, or that no Python value can hold.
_RAW = [
    b"\xff",
    b'{"model": "caf\xe9"}',  # Latin-1
    b'{"model": "\xc3\x28"}',  # a broken two-byte sequence
    b'{"model": "\xed\xa0\x80"}',  # a surrogate encoded in UTF-8
    b"\xff\xfe{\x00}\x00",  # UTF-16
    b"\xef\xbb\xbf\xff",  # a BOM, then garbage
    _DEEP,
    b"[" * 100_000,
    b'{"a":' * 3000 + b"1" + b"}" * 3000,
    b'{"temperature": NaN}',
    b'{"seed": Infinity}',
    b"-Infinity",
    b'{"temperature": 1e999}',
    b'{"seed": 1' + b"0" * 5000 + b"}",
    b'"\\ud800"',
    b'{"\\udfff": 1}',
    b"",
    b"null",
    b"[]",
]
# Values placed in the fields routes read; each must be refused, never reach a tokenizer or the engine.
_VALUES: list[bytes] = [b'"\\ud800"', b'"a\\udc80b"', _DEEP, b"2" + b"0" * 30, b'"yes"', b"1.5", b"true"]
_FIELDS = [
    b'{"model": %s}',
    b'{"model_id": %s}',
    b'{"model_id": "tiny", "version": %s}',
    b'{"messages": [{"role": "user", "content": %s}], "max_tokens": 1}',
    b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, "seed": %s}',
    b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, "stream": %s}',
    b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, "n": %s}',
    b'{"prompt": %s, "max_tokens": 1}',
    b'{"prompt": "hi", "max_tokens": 1, "temperature": %s}',
    b'{"input": %s}',
    b'{"text_input": %s, "parameters": {"max_tokens": 1}}',
    b'{"text_input": "hi", "parameters": {"max_tokens": 1, "seed": %s}}',
    b'{"text_input": "hi", "parameters": {"max_tokens": 1, "stream": %s}}',
    b'{"inputs": [{"name": "text_input", "datatype": "BYTES", "shape": [1], "data": [%s]}], '
    b'"parameters": {"max_tokens": 1}}',
    b'{"ready": %s}',
    b'{"parameters": {"unload_dependents": %s}}',
]
CORPUS = _RAW + [field % value for field in _FIELDS for value in _VALUES]


def _error_shape(path: str, body: Any) -> bool:
    if path.startswith(("/v2/", "/api/")):  # Open Inference's and Ollama's shape
        return isinstance(body, dict) and list(body) == ["error"] and isinstance(body["error"], str)
    if path.startswith("/v1/messages"):  # Anthropic's shape
        error = body.get("error") if isinstance(body, dict) else None
        return body.get("type") == "error" and isinstance(error, dict) and set(error) == {"type", "message"}
    error = body.get("error") if isinstance(body, dict) else None
    return isinstance(error, dict) and set(error) == {"message", "type", "param", "code"}


@pytest.mark.parametrize("path", _posts())
def test_hostile_bodies_get_a_4xx_in_the_routes_error_shape(server: str, path: str) -> None:
    failures = []
    with httpx.Client(base_url=server, timeout=60, headers={"Content-Type": "application/json"}) as http:
        for raw in CORPUS:
            response = http.post(path, content=raw)
            ok = response.status_code < 300 or (
                400 <= response.status_code < 500 and _error_shape(path, json.loads(response.content))
            )
            if not ok:
                failures.append(f"{raw[:80]!r}: {response.status_code} {response.text[:200]}")
    assert not failures, "\n".join(failures)
