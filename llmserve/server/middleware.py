"""ASGI middleware that applies to every route, present and future: the body size limit, and the request
id with its one access-log line (API keys and quotas: server/tenants.py)."""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmserve.errors import RequestTooLarge
from llmserve.server.errors import error_response
from llmserve.server.metrics import Metrics
from llmserve.service.streams import RequestStats

access_log = logging.getLogger("llmserve.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class BodyLimitMiddleware:
    """A body larger than `max_bytes` is a 413, whether its Content-Length says so or it streams in."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _error(self) -> RequestTooLarge:
        return RequestTooLarge(
            f"the request body is larger than the server's limit of {self.max_bytes} bytes"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > self.max_bytes:
            await error_response(self._error(), scope["path"])(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._error()
            return message

        await self.app(scope, limited, send)


class RequestLogMiddleware:
    """Gives each request an id (`X-Request-Id` in, or a new one; always out) and logs one line when it
    ends: method, path, status, tenant, model, tokens, time to first token, total time."""

    def __init__(self, app: ASGIApp, metrics: Metrics | None = None) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = Headers(scope=scope).get("x-request-id", "")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        stats = RequestStats()
        scope.setdefault("state", {}).update(request_id=request_id, stats=stats)
        start = time.monotonic()
        status = 0
        complete = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, complete
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append("X-Request-Id", request_id)
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                complete = True
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if self.metrics is not None and stats.model is not None:
                first = None if stats.first_token_at is None else stats.first_token_at - start
                elapsed = time.monotonic() - start
                self.metrics.request_done(
                    stats.model, endpoint(scope), stats.prompt_tokens, stats.completion_tokens, first, elapsed
                )
            ttft = f"{(stats.first_token_at - start) * 1000:.0f}" if stats.first_token_at else "-"
            access_log.info(
                "request_id=%s method=%s path=%s status=%s tenant=%s model=%s prompt_tokens=%s "
                "completion_tokens=%s ttft_ms=%s total_ms=%.0f complete=%s",
                request_id,
                scope["method"],
                scope["path"],
                status or "-",
                "-" if stats.tenant is None else stats.tenant.name,
                stats.model or "-",
                _or_dash(stats.prompt_tokens),
                _or_dash(stats.completion_tokens),
                ttft,
                (time.monotonic() - start) * 1000,
                str(complete).lower(),
            )


def endpoint(scope: Scope) -> str:
    """The path template of the app's route that matches the request (`/v2/models/{name}/generate`, not
    the model's name): a metric label of bounded cardinality."""
    for route in getattr(scope.get("app"), "routes", ()):
        if isinstance(route, BaseRoute) and route.matches(scope)[0] is Match.FULL:
            return str(getattr(route, "path", scope["path"]))
    return str(scope["path"])


def _or_dash(value: int | None) -> str:
    return "-" if value is None else str(value)
