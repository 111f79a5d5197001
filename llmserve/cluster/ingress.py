"""The cluster's HTTP entry (a Ray Serve ingress): it reads which model each request is for
(routing.py) and sends the request, through Ray Serve's model multiplexing, to a replica holding that
model; the replica's answer streams back as it comes. /v1/models merges every replica's listing. API keys
and the body limit are checked here as on a single server (the replica checks them again)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from llmserve.build import build_registry, setup_from_args
from llmserve.cluster.asgi import Forwarded, Head
from llmserve.cluster.listing import merge
from llmserve.cluster.plan import REPLICA_HEADER, ClusterPlan
from llmserve.cluster.routing import target
from llmserve.errors import LLMServeError, ReplicaUnavailable
from llmserve.models.usage import Usage
from llmserve.server.app import OPEN_PATHS
from llmserve.server.errors import on_error
from llmserve.server.middleware import BodyLimitMiddleware
from llmserve.server.quotas import Quotas
from llmserve.server.tenants import KeyStore, TenantMiddleware

# a replica that died (killed, out of memory) before it answered: Ray replaces it; meanwhile the request
# goes to another replica, after a pause that grows with each try
GONE = (RayActorError, ActorUnavailableError)
TRIES = 6
PAUSE = 0.5
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


class Ingress:
    def __init__(
        self, plan: ClusterPlan, replicas: DeploymentHandle[Any], directory: DeploymentHandle[Any]
    ) -> None:
        self._plan = plan
        self._names = build_registry(setup_from_args(plan.args))  # never started: it only resolves names
        self._replicas = replicas
        self._directory = directory

    def __serve_build_asgi_app__(self) -> Starlette:
        options = self._plan.options
        open_paths = OPEN_PATHS | {"/metrics"} if options.open_metrics else OPEN_PATHS
        usage = Usage()  # the ingress's own count of its keys' requests (each replica counts its tokens)
        keys = KeyStore(options.api_keys, options.keys)
        return Starlette(
            routes=[
                Route("/v1/models", self.models, methods=["GET"]),
                Route("/{path:path}", self.forward, methods=METHODS),
            ],
            middleware=[
                Middleware(BodyLimitMiddleware, max_bytes=options.max_request_bytes),
                Middleware(
                    TenantMiddleware, store=keys, quotas=Quotas(usage), usage=usage, open_paths=open_paths
                ),
            ],
            exception_handlers={Exception: on_error, HTTPException: on_error, LLMServeError: on_error},
        )

    async def models(self, request: Request) -> Response:
        listings = await self._directory.listings.remote()
        if not listings:  # no replica has reported yet: one answers for itself
            return await self.forward(request)
        return JSONResponse(merge(listings), headers={REPLICA_HEADER.decode(): ",".join(listings)})

    async def forward(self, request: Request) -> Response:
        body = await request.body()
        path: str = request.scope["path"]
        goal = target(self._names, request.method, path, body)
        forwarded = Forwarded(
            request.method, path, request.scope["query_string"], tuple(request.headers.raw), body, goal.holds
        )
        handle = self._replicas.options(multiplexed_model_id=goal.unit or "", stream=True)
        for attempt in range(TRIES):
            stream = handle.forward.remote(forwarded)
            assert isinstance(stream, DeploymentResponseGenerator)
            try:
                head = await stream.__anext__()
            except GONE:
                await asyncio.sleep(PAUSE * (attempt + 1))
                continue
            assert isinstance(head, Head)
            response = StreamingResponse(rest(stream), status_code=head.status)
            response.raw_headers = list(head.headers)
            return response
        raise ReplicaUnavailable("no replica could take the request; Ray is replacing one, retry shortly")


async def rest(stream: DeploymentResponseGenerator[Any]) -> AsyncIterator[bytes]:
    """The body's chunks; a client that goes away cancels the replica's answer."""
    try:
        async for piece in stream:
            yield piece
    finally:
        stream.cancel()  # type: ignore[no-untyped-call]
