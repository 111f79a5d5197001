"""create_app: builds the registry and the services, the middleware and the routes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from llmserve.config.entries import ModelConfig
from llmserve.config.runtime import RuntimeModels
from llmserve.engine import load_engine
from llmserve.engine.base import EngineFactory
from llmserve.engine.footprint import estimate
from llmserve.errors import LLMServeError
from llmserve.models.lifecycle import Estimator
from llmserve.models.registry import ModelRegistry, Preload
from llmserve.models.residency import Residency
from llmserve.server.access import require_admin
from llmserve.server.admin import routes as admin_routes
from llmserve.server.anthropic import routes as anthropic_routes
from llmserve.server.errors import on_error
from llmserve.server.figures import routes as figures_routes
from llmserve.server.metrics import CONTENT_TYPE, Metrics
from llmserve.server.middleware import BodyLimitMiddleware, RequestLogMiddleware
from llmserve.server.ollama import routes as ollama_routes
from llmserve.server.openai import routes as openai_routes
from llmserve.server.options import ServerOptions
from llmserve.server.quotas import Quotas
from llmserve.server.responses import routes as responses_routes
from llmserve.server.tenants import RATE_LIMIT_HEADERS, KeyStore, TenantMiddleware
from llmserve.server.ui import open_paths as ui_paths
from llmserve.server.ui import routes as ui_routes
from llmserve.server.ui import static_files
from llmserve.server.v2 import routes as v2_routes
from llmserve.service.anthropic import MessagesService
from llmserve.service.chat import ChatService
from llmserve.service.completions import CompletionService
from llmserve.service.ollama import OllamaService
from llmserve.service.responses import ResponsesService
from llmserve.service.responses_store import ResponseStore
from llmserve.service.v2 import V2Service

log = logging.getLogger(__name__)
OPEN_PATHS = frozenset({"/", "/health", "/v2/health/live", "/v2/health/ready"})


async def prometheus(request: Request) -> Response:
    if not request.app.state.options.open_metrics:  # --open-metrics: the operator opened it to all
        require_admin(request)  # it names every tenant
    metrics: Metrics = request.app.state.metrics
    return Response(metrics.render(), media_type=CONTENT_TYPE)


def create_app(
    models: Sequence[ModelConfig],
    default_id: str,
    *,
    factory: EngineFactory = load_engine,
    preload: Preload = "default",
    options: ServerOptions | None = None,
    residency: Residency | None = None,
    estimator: Estimator | None = estimate,
    runtime: RuntimeModels | None = None,
) -> Starlette:
    """The ASGI app. The workers start with the lifespan; `factory` loads an engine for a model;
    `residency` bounds the models in memory at once; `estimator` sizes a model before its load."""
    options = options or ServerOptions()
    registry = ModelRegistry(models, default_id, factory, residency, estimator)
    metrics = Metrics(registry)
    keys = KeyStore(options.api_keys, options.keys)
    quotas = Quotas(registry.usage)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        registry.start(preload)
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(registry.shutdown)

    middleware = [Middleware(RequestLogMiddleware, metrics=metrics)]
    if options.cors_origins:
        middleware.insert(
            0,
            Middleware(
                CORSMiddleware,
                allow_origins=list(options.cors_origins),
                allow_methods=["*"],
                allow_headers=["*"],
                expose_headers=["X-Request-Id", *RATE_LIMIT_HEADERS],
            ),
        )
    ui_files = static_files() if options.ui else {}
    middleware += [
        Middleware(BodyLimitMiddleware, max_bytes=options.max_request_bytes),
        Middleware(
            TenantMiddleware,
            store=keys,
            quotas=quotas,
            usage=registry.usage,
            open_paths=OPEN_PATHS | ui_paths(ui_files) | ({"/metrics"} if options.open_metrics else set()),
        ),
    ]
    app = Starlette(
        routes=[
            *openai_routes(),
            *responses_routes(),
            *anthropic_routes(),
            *v2_routes(),
            *ollama_routes(),
            *admin_routes(),
            *figures_routes(),
            *ui_routes(ui_files, key_required=keys.enabled),
            Route("/metrics", prometheus, methods=["GET"]),
        ],
        lifespan=lifespan,
        middleware=middleware,
        exception_handlers={Exception: on_error, HTTPException: on_error, LLMServeError: on_error},
    )
    app.state.registry = registry
    app.state.metrics = metrics
    app.state.keys = keys
    app.state.quotas = quotas
    app.state.runtime = runtime or RuntimeModels()
    app.state.v2 = V2Service(registry, app.state.runtime)
    app.state.options = options
    app.state.chat = ChatService(registry, allow_remote_images=options.allow_remote_images)
    app.state.completions = CompletionService(registry)
    app.state.ollama = OllamaService(registry, app.state.chat, app.state.completions)
    store = ResponseStore(options.responses_store_size, options.responses_store_ttl)
    app.state.responses = ResponsesService(app.state.chat, store)
    app.state.messages = MessagesService(app.state.chat)
    return app
