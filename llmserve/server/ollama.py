"""Ollama's API routes (`/api/*`, and `/` which Ollama clients probe): chat and generate as NDJSON
streams (the default) or one object, embeddings, the model listings, the version. Errors are Ollama's
`{"error": "message"}` (server/errors.py); an error after the first line is an `{"error"}` line."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from llmserve.errors import Forbidden, LLMServeError
from llmserve.protocol.base import parse_request
from llmserve.protocol.ollama import (
    ChatRequest,
    EmbeddingsRequest,
    EmbedRequest,
    GenerateRequest,
    ShowRequest,
)
from llmserve.server.access import access_of, check_model
from llmserve.server.body import read_json
from llmserve.server.openai import CLIENT_CLOSED, until_disconnect
from llmserve.server.state import ollama_of, registry_of, stats_of
from llmserve.service import ollama_models
from llmserve.service.ollama_requests import model_name

log = logging.getLogger(__name__)
NDJSON = "application/x-ndjson"


async def _ndjson(first: dict[str, Any], rest: AsyncGenerator[dict[str, Any], None]) -> AsyncIterator[bytes]:
    try:
        yield json.dumps(first).encode() + b"\n"
        async for line in rest:
            yield json.dumps(line).encode() + b"\n"
    except LLMServeError as exc:
        log.warning("an Ollama stream failed after it started: %s", exc.message)
        yield json.dumps({"error": exc.message}).encode() + b"\n"
    finally:
        await rest.aclose()


async def _answer(request: Request, lines: AsyncGenerator[dict[str, Any], None], stream: bool) -> Response:
    """The first object is awaited before the response starts, so that errors up to it (a load, the
    prompt, num_ctx) are an HTTP error; a whole answer is the last object."""
    try:
        if stream:
            first = await until_disconnect(request, anext(lines))
            if first is None:
                return Response(status_code=CLIENT_CLOSED)
            return StreamingResponse(_ndjson(first, lines), media_type=NDJSON)
        last: dict[str, Any] | None = None

        async def drain() -> dict[str, Any] | None:
            nonlocal last
            async for line in lines:
                last = line
            return last

        result = await until_disconnect(request, drain())
        if result is None:
            return Response(status_code=CLIENT_CLOSED)
        return JSONResponse(result)
    except BaseException:
        await lines.aclose()
        raise


async def _generation(request: Request, body: ChatRequest | GenerateRequest) -> Response:
    service, registry = ollama_of(request), registry_of(request)
    name = model_name(registry, body.model)
    check_model(request, registry.status(name), body.model)
    done = await service.load_or_unload(body, name, admin=access_of(request).admin)
    if done is not None:
        return JSONResponse(done)
    stats = stats_of(request)
    opening = (
        service.chat_lines(body, stats, streamed=body.stream)
        if isinstance(body, ChatRequest)
        else service.generate_lines(body, stats, streamed=body.stream)
    )
    lines = await until_disconnect(request, opening)
    if lines is None:
        return Response(status_code=CLIENT_CLOSED)
    return await _answer(request, lines, body.stream)


async def chat(request: Request) -> Response:
    return await _generation(request, parse_request(ChatRequest, await read_json(request)))


async def generate(request: Request) -> Response:
    return await _generation(request, parse_request(GenerateRequest, await read_json(request)))


async def embed(request: Request) -> Response:
    body = parse_request(EmbedRequest, await read_json(request))
    return JSONResponse(await ollama_models.embed(registry_of(request), body, stats_of(request).tenant))


async def embeddings(request: Request) -> Response:
    body = parse_request(EmbeddingsRequest, await read_json(request))
    return JSONResponse(await ollama_models.embeddings(registry_of(request), body, stats_of(request).tenant))


async def tags(request: Request) -> Response:
    return JSONResponse(ollama_models.tags(registry_of(request), access_of(request).may_use))


async def ps(request: Request) -> Response:
    return JSONResponse(ollama_models.running(registry_of(request), access_of(request).may_use))


async def show(request: Request) -> Response:
    body = parse_request(ShowRequest, await read_json(request))
    registry = registry_of(request)
    check_model(request, registry.status(model_name(registry, body.model_name)), body.model_name)
    return JSONResponse(ollama_models.show(registry_of(request), body.model_name))


async def version(request: Request) -> Response:
    return JSONResponse({"version": ollama_models.OLLAMA_API_VERSION})


async def running(request: Request) -> Response:
    return PlainTextResponse("Ollama is running")


async def not_served(request: Request) -> Response:
    """Pull, push, create, copy, delete: a 403 (after the body is read, so a bad one is still a 400)."""
    if request.method != "HEAD":
        await read_json(request)
    action = request.url.path.removeprefix("/api/").split("/")[0]
    raise Forbidden(
        f"llmserve does not {action} models: it serves the models its config file names "
        "(add an entry there, see docs/config.md)"
    )


def routes() -> list[BaseRoute]:
    return [
        Route("/", running, methods=["GET", "HEAD"]),
        Route("/api/chat", chat, methods=["POST"]),
        Route("/api/generate", generate, methods=["POST"]),
        Route("/api/embed", embed, methods=["POST"]),
        Route("/api/embeddings", embeddings, methods=["POST"]),
        Route("/api/tags", tags, methods=["GET", "HEAD"]),
        Route("/api/ps", ps, methods=["GET"]),
        Route("/api/show", show, methods=["POST"]),
        Route("/api/version", version, methods=["GET", "HEAD"]),
        Route("/api/pull", not_served, methods=["POST"]),
        Route("/api/push", not_served, methods=["POST"]),
        Route("/api/create", not_served, methods=["POST"]),
        Route("/api/copy", not_served, methods=["POST"]),
        Route("/api/delete", not_served, methods=["DELETE"]),
    ]
