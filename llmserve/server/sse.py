"""Server-sent events: the one place that builds an SSE response (OpenAI's streamed completions, V2's
generate_stream, the model events), and OpenAI's stream framing (`data: {json}` events, then
`data: [DONE]`)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from sse_starlette import EventSourceResponse

from llmserve.errors import InternalError, LLMServeError

log = logging.getLogger(__name__)
PING_SECONDS = 15


def data(payload: dict[str, Any]) -> dict[str, str]:
    """One `data: {json}` event; sse-starlette frames it with the response's `\n` separator."""
    return {"data": json.dumps(payload, ensure_ascii=False, separators=(",", ":"))}


def event_source(
    events: AsyncIterator[dict[str, str]], drain_seconds: float | None = None
) -> EventSourceResponse:
    """An SSE response of `events` (sse-starlette's dicts: data, event, comment), with a keep-alive
    comment every PING_SECONDS; `drain_seconds`: how long a stream may go on once the server stops."""
    return EventSourceResponse(
        events,
        ping=PING_SECONDS,
        sep="\n",
        headers={"Cache-Control": "no-cache"},
        shutdown_grace_period=drain_seconds or 0,
    )


def json_events(chunks: AsyncGenerator[dict[str, Any], None]) -> AsyncIterator[dict[str, str]]:
    """Each chunk as a `data:` event; the stream ends when `chunks` does (V2's generate_stream)."""

    async def events() -> AsyncIterator[dict[str, str]]:
        try:
            async for chunk in chunks:
                yield data(chunk)
        finally:
            await chunks.aclose()

    return events()


def sse_response(chunks: AsyncGenerator[dict[str, Any], None], drain_seconds: float) -> EventSourceResponse:
    """OpenAI's stream: `chunks`, then `[DONE]`; an error after the stream started becomes an error
    event before `[DONE]`.

    On shutdown the stream goes on: the registry's drain ends it with an error event when its time is
    up, so sse-starlette's own cancel (after `drain_seconds` more) is only a last resort.

    When the client goes away, sse-starlette cancels this generator and the `finally` closes `chunks`,
    which cancels the generation in its worker.
    """

    async def events() -> AsyncIterator[dict[str, str]]:
        try:
            async for chunk in chunks:
                yield data(chunk)
        except LLMServeError as exc:
            yield data(exc.to_dict())
        except Exception as exc:  # a bug must still end the stream in the documented shape
            log.exception("stream failed")
            yield data(InternalError(f"internal error: {type(exc).__name__}").to_dict())
        finally:
            await chunks.aclose()
        yield {"data": "[DONE]"}

    return event_source(events(), drain_seconds)


def named_sse_response(
    events: AsyncGenerator[dict[str, Any], None], drain_seconds: float
) -> EventSourceResponse:
    """A stream of typed events (the Responses API's): each as `event: TYPE` + `data: {json}`, no
    `[DONE]`. `events` reports its own failures as events of its API; closing it cancels the work."""

    async def framed() -> AsyncIterator[dict[str, str]]:
        try:
            async for event in events:
                yield {"event": str(event["type"]), **data(event)}
        finally:
            await events.aclose()

    return event_source(framed(), drain_seconds)
