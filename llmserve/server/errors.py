"""The one place where an error becomes an HTTP response. Each API answers in its own error shape,
chosen by the request's path: OpenAI's error JSON by default, the Open Inference Protocol's
`{"error": "message"}` on /v2; a new API registers its shape in `SHAPES`."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from llmserve.errors import (
    InternalError,
    LLMServeError,
    MethodNotAllowed,
    ModelNotFound,
    Overloaded,
    RateLimited,
    RouteNotFound,
    StatusOfUnknownModel,
)
from llmserve.server.access import access_of
from llmserve.server.state import registry_of

log = logging.getLogger(__name__)

Shape = Callable[[LLMServeError], dict[str, Any]]


def openai_shape(error: LLMServeError) -> dict[str, Any]:
    return error.to_dict()


def open_inference_shape(error: LLMServeError) -> dict[str, Any]:
    return {"error": error.message}


# Anthropic's error types by HTTP status; Overloaded keeps its 503 and Retry-After (the SDK's
# ServiceUnavailableError, retried) rather than Anthropic's own 529.
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}


def anthropic_shape(error: LLMServeError) -> dict[str, Any]:
    kind = _ANTHROPIC_TYPES.get(error.status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": error.message}}


# (path prefix, shape): the first prefix that the path equals or continues with "/" wins.
SHAPES: tuple[tuple[str, Shape], ...] = (
    ("/v2", open_inference_shape),
    ("/v1/messages", anthropic_shape),
    ("/api", open_inference_shape),  # Ollama's errors are the same `{"error": "message"}`
)


def shape_of(path: str) -> Shape:
    for prefix, shape in SHAPES:
        if path == prefix or path.startswith(prefix + "/"):
            return shape
    return openai_shape


def error_response(error: LLMServeError, path: str, *, status: int | None = None) -> JSONResponse:
    """`error` as the response of the API that serves `path`."""
    return JSONResponse(
        shape_of(path)(error), status_code=status or error.status, headers=retry_headers(error)
    )


def retry_headers(error: LLMServeError) -> dict[str, str] | None:
    """`Retry-After` in whole seconds; a 429 also carries `retry-after-ms` (read by OpenAI's SDKs)."""
    if isinstance(error, Overloaded):
        return {"Retry-After": str(error.retry_after)}
    if isinstance(error, RateLimited):
        wait = max(error.retry_after, 0.001)
        return {"Retry-After": str(math.ceil(wait)), "retry-after-ms": str(math.ceil(wait * 1000))}
    return None


async def on_error(request: Request, exc: Exception) -> Response:
    """Starlette's exception handler for everything: typed errors, routing errors, and bugs."""
    path = request.url.path
    if isinstance(exc, ModelNotFound):
        exc = _for_tenant(request, exc)
    if isinstance(exc, LLMServeError):
        return error_response(exc, path)
    if isinstance(exc, HTTPException):
        if exc.status_code == 405:
            error: LLMServeError = MethodNotAllowed(f"{request.method} is not allowed on {path}")
        elif exc.status_code == 404:
            error = RouteNotFound(f"no endpoint {request.method} {path}")
        else:
            error = LLMServeError(str(exc.detail))
        return error_response(error, path, status=exc.status_code)
    log.error("unhandled error on %s %s", request.method, path, exc_info=exc)
    return error_response(InternalError(f"internal error: {type(exc).__name__}"), path)


def _for_tenant(request: Request, error: ModelNotFound) -> ModelNotFound:
    """A 404 for a tenant's key lists only the models that key may use."""
    access = access_of(request)
    if access.tenant is None:
        return error
    units = [s.unit_id for s in registry_of(request).statuses() if access.may_use(s)]
    scoped = ModelNotFound(error.model_id, units)
    return StatusOfUnknownModel(error.model_id, scoped) if isinstance(error, StatusOfUnknownModel) else scoped
