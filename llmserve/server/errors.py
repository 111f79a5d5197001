"""The one place where an error becomes an HTTP response: OpenAI's error JSON, or on the /v2 routes the
Open Inference Protocol's `{"error": "message"}` with the same status."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from llmserve.errors import InternalError, LLMServeError, MethodNotAllowed, Overloaded, RouteNotFound

log = logging.getLogger(__name__)


def error_response(error: LLMServeError, *, v2: bool = False, status: int | None = None) -> JSONResponse:
    headers = {"Retry-After": str(error.retry_after)} if isinstance(error, Overloaded) else None
    body = {"error": error.message} if v2 else error.to_dict()
    return JSONResponse(body, status_code=status or error.status, headers=headers)


def is_v2(path: str) -> bool:
    return path == "/v2" or path.startswith("/v2/")


async def on_error(request: Request, exc: Exception) -> Response:
    """Starlette's exception handler for everything: typed errors, routing errors, and bugs."""
    v2 = is_v2(request.url.path)
    if isinstance(exc, LLMServeError):
        return error_response(exc, v2=v2)
    if isinstance(exc, HTTPException):
        if exc.status_code == 405:
            error: LLMServeError = MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}")
        elif exc.status_code == 404:
            error = RouteNotFound(f"no endpoint {request.method} {request.url.path}")
        else:
            error = LLMServeError(str(exc.detail))
        return error_response(error, v2=v2, status=exc.status_code)
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(InternalError(f"internal error: {type(exc).__name__}"), v2=v2)
