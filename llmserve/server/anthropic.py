"""The Anthropic Messages API routes: /v1/messages (whole or streamed) and /v1/messages/count_tokens.
Errors take Anthropic's shape by path (server/errors.py); `x-api-key` is checked by the middleware, and
`anthropic-version` / `anthropic-beta` are tolerated (llmserve answers every version the same way)."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from llmserve.errors import InternalError, LLMServeError
from llmserve.protocol.anthropic import CountTokensRequest, MessagesRequest
from llmserve.protocol.base import parse_request
from llmserve.server.body import read_json
from llmserve.server.errors import anthropic_shape
from llmserve.server.openai import CLIENT_CLOSED, until_disconnect
from llmserve.server.sse import data, event_source
from llmserve.server.state import messages_of, options_of, stats_of

log = logging.getLogger(__name__)


def _request_id(request: Request) -> dict[str, str]:
    """Anthropic's `request-id` header (the SDK's `_request_id`): the request's id."""
    return {"request-id": str(request.state.request_id)}


def _events(pairs: AsyncGenerator[tuple[str, dict[str, Any]], None]) -> AsyncIterator[dict[str, str]]:
    """Named SSE events; an error after the stream started is Anthropic's `event: error`."""

    async def events() -> AsyncIterator[dict[str, str]]:
        try:
            async for name, payload in pairs:
                yield {"event": name, **data(payload)}
        except LLMServeError as exc:
            yield {"event": "error", **data(anthropic_shape(exc))}
        except Exception as exc:  # a bug must still end the stream in the documented shape
            log.exception("stream failed")
            yield {
                "event": "error",
                **data(anthropic_shape(InternalError(f"internal error: {type(exc).__name__}"))),
            }
        finally:
            await pairs.aclose()

    return events()


async def messages(request: Request) -> Response:
    body = parse_request(MessagesRequest, await read_json(request))
    service = messages_of(request)
    stats = stats_of(request)
    if body.stream:
        pairs = await until_disconnect(request, service.open_stream(body, stats))
        if pairs is None:
            return Response(status_code=CLIENT_CLOSED)
        response = event_source(_events(pairs), options_of(request).shutdown_timeout + 5)
        response.headers.update(_request_id(request))
        return response
    message = await until_disconnect(request, service.complete(body, stats))
    if message is None:
        return Response(status_code=CLIENT_CLOSED)
    return JSONResponse(message.model_dump(), headers=_request_id(request))


async def count_tokens(request: Request) -> Response:
    body = parse_request(CountTokensRequest, await read_json(request))
    counted = await until_disconnect(
        request, messages_of(request).count_tokens(body, stats_of(request).tenant)
    )
    if counted is None:
        return Response(status_code=CLIENT_CLOSED)
    return JSONResponse(counted, headers=_request_id(request))


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/messages", messages, methods=["POST"]),
        Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
    ]
