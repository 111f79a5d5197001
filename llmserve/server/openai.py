"""The /v1 routes (OpenAI API plus model management: list, status, load, unload, promote) and /health."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from llmserve.errors import ModelNotFound, StatusOfUnknownModel
from llmserve.models.registry import DEFAULT_ALIAS
from llmserve.models.status import ModelStatus
from llmserve.protocol.base import parse_request
from llmserve.protocol.embeddings import EmbeddingRequest
from llmserve.protocol.model_management import (
    KVCacheBody,
    LoadProgressBody,
    ModelCard,
    ModelIdRequest,
    ModelList,
    ModelStatusResponse,
    PromoteRequest,
    PromoteResponse,
)
from llmserve.protocol.openai_chat import ChatCompletionRequest
from llmserve.protocol.openai_completions import CompletionRequest
from llmserve.server.access import access_of, check_model, require_admin
from llmserve.server.body import read_json
from llmserve.server.events import model_events
from llmserve.server.openapi import openapi_json
from llmserve.server.sse import sse_response
from llmserve.server.state import chat_of, completions_of, options_of, registry_of, stats_of
from llmserve.service.embeddings import create_embeddings
from llmserve.service.streams import RequestStats

T = TypeVar("T")
B = TypeVar("B", contravariant=True)
CLIENT_CLOSED = 499  # nginx's "client closed request": logged, never seen by the client


def _json(model: Any) -> JSONResponse:
    return JSONResponse(model.model_dump())


async def until_disconnect(request: Request, work: Awaitable[T]) -> T | None:
    """Awaits `work`; if the client disconnects first, cancels it (which cancels the generation) and
    returns None. Streams watch for themselves once they started (sse-starlette)."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        task.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        return await task
    except asyncio.CancelledError:
        if watcher.done() and not watcher.cancelled():
            return None  # the client is gone; nobody reads an answer
        raise
    finally:
        watcher.cancel()


class Answering(Protocol[B]):
    """A service that answers a body whole or as a stream of chunks (chat, completions)."""

    async def open_stream(self, body: B, stats: RequestStats) -> AsyncGenerator[dict[str, Any], None]: ...

    async def complete(self, body: B, stats: RequestStats) -> Any: ...


StreamResponse = Callable[[AsyncGenerator[dict[str, Any], None], float], Response]


async def answer(
    request: Request,
    service: Answering[B],
    body: B,
    stream: bool,
    stream_response: StreamResponse = sse_response,
) -> Response:
    """The service's answer to `body`: a stream (`stream_response`: OpenAI's chunks and `[DONE]` by
    default) or one JSON object; a client that leaves first cancels the work."""
    stats = stats_of(request)
    if stream:
        chunks = await until_disconnect(request, service.open_stream(body, stats))
        if chunks is None:
            return Response(status_code=CLIENT_CLOSED)
        return stream_response(chunks, options_of(request).shutdown_timeout + 5)
    result = await until_disconnect(request, service.complete(body, stats))
    if result is None:
        return Response(status_code=CLIENT_CLOSED)
    return _json(result) if isinstance(result, BaseModel) else JSONResponse(result)


async def chat_completions(request: Request) -> Response:
    body = parse_request(ChatCompletionRequest, await read_json(request))
    return await answer(request, chat_of(request), body, body.stream)


async def completions(request: Request) -> Response:
    body = parse_request(CompletionRequest, await read_json(request))
    return await answer(request, completions_of(request), body, body.stream)


async def embeddings(request: Request) -> Response:
    body = parse_request(EmbeddingRequest, await read_json(request))
    stats = stats_of(request)
    result = await until_disconnect(request, create_embeddings(registry_of(request), body, stats.tenant))
    if result is None:
        return Response(status_code=CLIENT_CLOSED)
    stats.model, stats.prompt_tokens = result["model"], result["usage"]["prompt_tokens"]
    return JSONResponse(result)


async def list_models(request: Request) -> Response:
    """Every model the request's key may use."""
    registry, access = registry_of(request), access_of(request)
    created = registry.created
    named = [(DEFAULT_ALIAS, registry.status(None))]
    for api_id in registry.api_ids():
        if registry.default_unit(api_id) is not None:  # versions: ID (its default version), then each
            named.append((api_id, registry.status(api_id)))
        named += [(s.unit_id, s) for s in registry.versions(api_id)]
    return _json(ModelList(data=[_card(name, s, created) for name, s in named if access.may_use(s)]))


def _card(model_id: str, status: ModelStatus, created: int) -> ModelCard:
    mode = status.quant_mode
    sampling = None if status.kind == "Embedding" else status.sampling
    return ModelCard(
        id=model_id,
        created=created,
        status=status.api_status,
        engine=status.engine,
        quantization=None if mode is None else f"bitsandbytes-{mode}",
        memory_bytes=status.memory_bytes,
        expires_at=None if status.expires_at is None else int(status.expires_at),
        progress=_progress(status),
        version=status.version,
        sampling_defaults=None if sampling is None else dict(sampling.values),
        sampling_sources=None if sampling is None else dict(sampling.sources),
        kv_cache=None if status.kv is None else KVCacheBody.model_validate(status.kv, from_attributes=True),
    )


def _progress(status: ModelStatus) -> LoadProgressBody | None:
    """Only while the model loads."""
    progress = status.progress
    if progress is None:
        return None
    return LoadProgressBody(stage=progress.stage, fraction=round(progress.fraction, 3))


async def get_model(request: Request) -> Response:
    registry = registry_of(request)
    model_id = request.path_params["model_id"]
    status = check_model(request, registry.status(model_id), model_id)
    return _json(_card(model_id, status, registry.created))


async def _model_id(request: Request) -> str:
    return parse_request(ModelIdRequest, await read_json(request)).model_id


async def _managed(request: Request) -> str:
    """The model a management request names, when its key is an admin's that may use that model."""
    require_admin(request)
    model_id = await _model_id(request)
    check_model(request, registry_of(request).status(model_id), model_id)
    return model_id


async def unload_model(request: Request) -> Response:
    status = await registry_of(request).unload(await _managed(request))
    return _status(ModelStatusResponse(model_id=status.unit_id, status="unloaded"))


async def reload_model(request: Request) -> Response:
    status = await registry_of(request).reload(await _managed(request))
    return _status(ModelStatusResponse(model_id=status.unit_id, status="loaded"))


async def model_status(request: Request) -> Response:
    model_id = await _model_id(request)
    try:
        status = registry_of(request).status(model_id)
    except ModelNotFound as exc:
        raise StatusOfUnknownModel(model_id, exc) from None
    check_model(request, status, model_id)
    body = ModelStatusResponse(model_id=status.unit_id, status=status.api_status, progress=_progress(status))
    return _status(body)


def _status(body: ModelStatusResponse) -> JSONResponse:
    """The model management answer `{"model_id", "status"}`, with `progress` only while the model loads."""
    return JSONResponse(body.model_dump(exclude_none=True))


async def promote_model(request: Request) -> Response:
    """Loads a version while the current default keeps serving, then makes it the default atomically."""
    require_admin(request)
    body = parse_request(PromoteRequest, await read_json(request))
    check_model(request, registry_of(request).version(body.model_id, body.version), body.model_id)
    promoted, previous = await registry_of(request).promote(body.model_id, body.version)
    return _json(
        PromoteResponse(
            model_id=body.model_id,
            version=promoted.version_label,
            previous_version=previous.version_label,
        )
    )


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def routes() -> list[BaseRoute]:
    return [
        Route("/health", health, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/unload", unload_model, methods=["POST"]),
        Route("/v1/models/reload", reload_model, methods=["POST"]),
        Route("/v1/models/status", model_status, methods=["POST"]),
        Route("/v1/models/promote", promote_model, methods=["POST"]),
        Route("/v1/models/events", model_events, methods=["GET"]),  # before {model_id:path}
        Route("/v1/models/{model_id:path}", get_model, methods=["GET"]),
    ]
