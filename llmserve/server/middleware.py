"""ASGI middleware that applies to every route, present and future: API keys, the body size limit,
and the request id with its one access-log line."""

from __future__ import annotations

import hmac
import logging
import re
import time
import uuid
from collections.abc import Sequence

from starlette.datastructures import Headers, MutableHeaders
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmserve.errors import InvalidAPIKey, RequestTooLarge
from llmserve.server.errors import error_response
from llmserve.server.metrics import Metrics
from llmserve.service.streams import RequestStats

access_log = logging.getLogger("llmserve.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class APIKeyMiddleware:
    """With keys configured, every path outside `open_paths` needs `Authorization: Bearer KEY` or
    `x-api-key: KEY`. Keys are compared in constant time and never logged."""

    def __init__(self, app: ASGIApp, keys: Sequence[str], open_paths: frozenset[str]) -> None:
        self.app = app
        self.keys = [key.encode() for key in keys]
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        scheme, _, token = headers.get("authorization", "").partition(" ")
        given = token.strip() if scheme.lower() == "bearer" else headers.get("x-api-key", "")
        if not self._valid(given.encode()):
            why = "no API key was given" if not given else "the API key is not valid"
            message = f"{why}: send it as 'Authorization: Bearer KEY' or 'x-api-key: KEY'"
            await error_response(InvalidAPIKey(message), scope["path"])(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _valid(self, given: bytes) -> bool:
        matched = False
        for key in self.keys:  # no early exit: the time taken does not tell which key came close
            matched |= hmac.compare_digest(given, key)
        return matched


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
    ends: method, path, status, model, tokens, time to first token, total time."""

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
                "request_id=%s method=%s path=%s status=%s model=%s prompt_tokens=%s completion_tokens=%s "
                "ttft_ms=%s total_ms=%.0f complete=%s",
                request_id,
                scope["method"],
                scope["path"],
                status or "-",
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
