"""create_app: builds the registry and the services, mounts the routes, and holds the one error handler."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from llmserve.config import ModelConfig
from llmserve.engine import load_engine
from llmserve.engine.base import EngineFactory
from llmserve.errors import InternalError, LLMServeError, MethodNotAllowed, Overloaded, RouteNotFound
from llmserve.registry import ModelRegistry, Preload
from llmserve.server import openai
from llmserve.service import ChatService

log = logging.getLogger(__name__)


def error_response(error: LLMServeError) -> JSONResponse:
    """The one place where an error becomes OpenAI's error JSON."""
    headers = {"Retry-After": str(error.retry_after)} if isinstance(error, Overloaded) else None
    return JSONResponse(error.to_dict(), status_code=error.status, headers=headers)


async def _on_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, LLMServeError):
        return error_response(exc)
    if isinstance(exc, HTTPException):
        if exc.status_code == 405:
            return error_response(MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}"))
        if exc.status_code == 404:
            return error_response(RouteNotFound(f"no endpoint {request.method} {request.url.path}"))
        error = LLMServeError(str(exc.detail))
        return JSONResponse(error.to_dict(), status_code=exc.status_code)
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(InternalError(f"internal error: {type(exc).__name__}"))


def create_app(
    models: Sequence[ModelConfig],
    default_id: str,
    *,
    factory: EngineFactory = load_engine,
    preload: Preload = "default",
) -> Starlette:
    """The ASGI app. The workers start with the lifespan; `factory` loads an engine for a model."""
    registry = ModelRegistry(models, default_id, factory)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        registry.start(preload)
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(registry.shutdown)

    app = Starlette(
        routes=openai.routes(),
        lifespan=lifespan,
        exception_handlers={Exception: _on_error, HTTPException: _on_error, LLMServeError: _on_error},
    )
    app.state.registry = registry
    app.state.chat = ChatService(registry)
    return app
