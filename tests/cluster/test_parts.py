"""The parts of `llmserve ray` that need no Ray cluster: which model a request is for, the merged
/v1/models, a request run through an app in process (streamed, and abandoned), the command's errors."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from cli_run import one_line_error, run_cli
from fakes import Factory, ScriptedEngine
from model_configs import model
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from llmserve.cluster.asgi import Forwarded, Head, run_app
from llmserve.cluster.listing import STALE, Directory, merge
from llmserve.cluster.routing import Target, target
from llmserve.models.registry import ModelRegistry

REGISTRY = ModelRegistry(
    [model("a"), model("b", "1"), model("b", "2", default_version=True)],
    "a",
    Factory(lambda c: ScriptedEngine([])),
)


@pytest.mark.parametrize(
    ("method", "path", "body", "expected"),
    [
        ("POST", "/v1/chat/completions", b'{"model": "b"}', Target("b@2", True)),
        ("POST", "/v1/chat/completions", b"{}", Target("a", True)),  # no model: the default one
        ("POST", "/v1/messages", b'{"model": "default"}', Target("a", True)),
        ("POST", "/api/chat", b'{"model": "b@1"}', Target("b@1", True)),
        ("POST", "/v1/embeddings", b"not json", Target("a", True)),  # the replica answers the 400
        ("POST", "/v1/chat/completions", b'{"model": "nope"}', Target(None, False)),  # its 404 too
        ("POST", "/v1/models/reload", b'{"model_id": "b"}', Target("b@2", True)),
        ("POST", "/v1/models/unload", b'{"model_id": "a"}', Target("a", False)),  # never loads
        ("POST", "/api/show", b'{"name": "a"}', Target("a", False)),
        ("POST", "/v2/models/b/versions/1/generate_stream", b"", Target("b@1", True)),
        ("POST", "/v2/repository/models/a/load", b"", Target("a", True)),
        ("GET", "/v2/models/a/ready", b"", Target("a", False)),
        ("GET", "/health", b"", Target(None, False)),
        ("GET", "/v1/models/a", b"", Target(None, False)),
    ],
)
def test_the_target_of_a_request(method: str, path: str, body: bytes, expected: Target) -> None:
    assert target(REGISTRY, method, path, body) == expected


def card(model_id: str, status: str, **extra: Any) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "status": status, **extra}


def test_the_merged_listing_shows_every_replica() -> None:
    merged = merge(
        {
            "r1": [card("default", "unloaded"), card("a", "unloaded"), card("b", "loaded", memory_bytes=7)],
            "r2": [card("default", "loaded"), card("a", "loaded", memory_bytes=5), card("b", "unloaded")],
        }
    )
    assert merged == {
        "object": "list",
        "data": [
            card("default", "loaded", replicas={"r1": "unloaded", "r2": "loaded"}),
            card("a", "loaded", memory_bytes=5, replicas={"r1": "unloaded", "r2": "loaded"}),
            card("b", "loaded", memory_bytes=7, replicas={"r1": "loaded", "r2": "unloaded"}),
        ],
    }


def test_a_silent_replica_leaves_the_directory() -> None:
    now = [0.0]
    directory = Directory(clock=lambda: now[0])
    directory.report("r1", [card("a", "loaded")])
    directory.report("r2", [card("a", "unloaded")])
    now[0] = STALE - 1
    directory.report("r2", [card("a", "unloaded")])
    assert list(directory.listings()) == ["r1", "r2"]
    now[0] = STALE + 0.5  # r1 said nothing for longer than STALE: killed
    assert list(directory.listings()) == ["r2"]
    directory.forget("r2")
    assert directory.listings() == {}


async def slow_stream(request: Request) -> StreamingResponse:
    body = await request.body()

    async def pieces() -> Any:
        for i in range(1000):
            yield f"{body.decode()}{i};"
            await asyncio.sleep(0.01)
        closed.append("end")

    closed: list[str] = request.app.state.closed
    return StreamingResponse(pieces(), headers={"x-one": "1"})


def test_a_response_comes_back_head_first_then_piece_by_piece() -> None:
    app = Starlette(routes=[Route("/s", slow_stream, methods=["POST"])])
    app.state.closed = []

    async def scenario() -> None:
        request = Forwarded("POST", "/s", b"", (), b"x")
        pieces = run_app(app, request, ((b"x-llmserve-replica", b"r1"),))
        head = await pieces.__anext__()
        assert isinstance(head, Head) and head.status == 200
        assert (b"x-one", b"1") in head.headers and (b"x-llmserve-replica", b"r1") in head.headers
        assert await pieces.__anext__() == b"x0;"  # streamed: long before the 1000th piece
        assert await pieces.__anext__() == b"x1;"
        await pieces.aclose()  # the client went away: the app's stream stops

    asyncio.run(scenario())
    assert app.state.closed == []


def test_bad_ray_arguments_are_one_line_errors(tmp_path: Any) -> None:
    assert "--replicas" in one_line_error(run_cli("ray", "--config", "c.json", "--replicas", "0"))
    cpus = one_line_error(run_cli("ray", "--config", "c.json", "--replica-cpus", "many"))
    assert "--replica-cpus" in cpus and "'many' is not a number (0 or more)" in cpus
    missing = one_line_error(run_cli("ray", "--config", str(tmp_path / "none.json")))
    assert missing.startswith("llmserve: error:") and "none.json" in missing
