"""One HTTP request run through an ASGI app in this process, its response handed back piece by piece: the
head (status and headers), then the body's chunks as the app sends them, so a streamed answer streams.
What crosses from the ingress to a replica and back (`Forwarded`, `Head`, bytes) is plain data."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message

Headers = tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True)
class Forwarded:
    """A request as the ingress received it. `holds`: it may load its model (a generation, a load)."""

    method: str
    path: str
    query: bytes
    headers: Headers
    body: bytes
    holds: bool = False


@dataclass(frozen=True)
class Head:
    status: int
    headers: Headers


def scope_of(request: Forwarded) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": "http",
        "path": request.path,
        "raw_path": request.path.encode(),
        "query_string": request.query,
        "root_path": "",
        "headers": list(request.headers),
        "client": ("127.0.0.1", 0),
        "server": ("llmserve", 80),
    }


async def run_app(app: ASGIApp, request: Forwarded, extra: Headers = ()) -> AsyncIterator[Head | bytes]:
    """Runs `request` through `app`: yields its `Head` (with `extra` headers added), then its body's
    chunks. Closing the iterator early is the client going away: the app hears `http.disconnect`."""
    sent: asyncio.Queue[Message] = asyncio.Queue()
    gone = asyncio.Event()
    received = False

    async def receive() -> Message:
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": request.body, "more_body": False}
        await gone.wait()  # a stream listens for the disconnect: it comes when the client goes
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        await sent.put(message)

    async def call() -> None:
        await app(scope_of(request), receive, send)

    task = asyncio.create_task(call())
    finished = False
    try:
        while True:
            if not sent.empty():
                message = sent.get_nowait()
            elif task.done():
                task.result()  # the app ended without a complete response: raise what it raised
                raise RuntimeError(f"{request.method} {request.path}: the app sent no complete response")
            else:
                getter = asyncio.ensure_future(sent.get())
                await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    continue
                message = getter.result()
            if message["type"] == "http.response.start":
                yield Head(message["status"], (*(tuple(h) for h in message.get("headers", ())), *extra))
            elif message["type"] == "http.response.body":
                if message.get("body"):
                    yield bytes(message["body"])
                if not message.get("more_body", False):
                    finished = True
                    break
    finally:
        gone.set()
        if not finished:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
