"""The one place where an error becomes an HTTP response in OpenAI's error JSON."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from llmserve.errors import InternalError, LLMServeError, MethodNotAllowed, Overloaded, RouteNotFound

log = logging.getLogger(__name__)


def error_response(error: LLMServeError) -> JSONResponse:
    headers = {"Retry-After": str(error.retry_after)} if isinstance(error, Overloaded) else None
    return JSONResponse(error.to_dict(), status_code=error.status, headers=headers)


async def on_error(request: Request, exc: Exception) -> Response:
    """Starlette's exception handler for everything: typed errors, routing errors, and bugs."""
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
