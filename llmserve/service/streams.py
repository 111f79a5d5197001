"""What every generation service shares: the request's stats for the access log, starting a request's
generations and waiting until each has started, collecting a finished generation, and merging the
events of several. Chat, completions and V2 use these; no service copies them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, replace
from typing import Any

from llmserve.config.keys import Tenant
from llmserve.engine.base import GenerationParams
from llmserve.errors import InternalError
from llmserve.models.jobs import Event, EventStream, Failed, Finished, Started, TextDelta


@dataclass
class RequestStats:
    """What the access log reports about one request: whose it is (set by the API key middleware; the
    services pass it into the generation jobs), then filled in as its events pass."""

    tenant: Tenant | None = None  # None: a server without keys
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    first_token_at: float | None = None  # time.monotonic() of the first token

    def observe(self, event: Event) -> None:
        if isinstance(event, Started):
            self.prompt_tokens = event.prompt_tokens
        elif isinstance(event, TextDelta) and self.first_token_at is None:
            self.first_token_at = time.monotonic()
        elif isinstance(event, Finished):
            self.completion_tokens = event.completion_tokens
            if self.first_token_at is None:
                self.first_token_at = event.first_token_at


def seeded(params: GenerationParams, index: int) -> GenerationParams:
    """Choice `index` of several samples with seed + index (the first with the seed itself)."""
    return params if params.seed is None or index == 0 else replace(params, seed=params.seed + index)


async def start_streams(
    count: int, submit: Callable[[int], tuple[str, EventStream]]
) -> tuple[str, list[EventStream], list[Started]]:
    """Submits `count` generations and waits until each has started: (the model's name, the streams,
    their `Started` events). A failure cancels every one of them, then is raised."""
    streams: list[EventStream] = []
    model = ""
    try:
        for index in range(count):
            model, stream = submit(index)
            streams.append(stream)
        started = [await first_event(stream) for stream in streams]
    except BaseException:
        for stream in streams:
            stream.cancel()
        raise
    return model, streams, started


async def first_event(stream: EventStream) -> Started:
    """Waits until the model is loaded and the prompt accepted; raises the error if it failed."""
    try:
        event = await stream.get()
    except BaseException:
        stream.cancel()
        raise
    if isinstance(event, Failed):
        raise event.error
    if not isinstance(event, Started):
        stream.cancel()
        raise InternalError(f"unexpected first event {type(event).__name__}")
    return event


async def collect(
    stream: EventStream, stats: RequestStats | None = None
) -> tuple[str, list[dict[str, Any]], Finished]:
    """A choice's text, its tokens' log probabilities and its end."""
    parts: list[str] = []
    entries: list[dict[str, Any]] = []
    async for event in stream.until_done():
        if stats is not None:
            stats.observe(event)
        if isinstance(event, TextDelta):
            parts.append(event.text)
            entries.extend(event.logprobs)
        elif isinstance(event, Failed):
            raise event.error
        elif isinstance(event, Finished):
            return "".join(parts), entries, event
    raise InternalError("the generation ended without a result")


async def merged(streams: list[EventStream]) -> AsyncGenerator[tuple[int, Event], None]:
    """The events of all choices as they come, tagged with the choice's index."""
    if len(streams) == 1:
        async for event in streams[0].until_done():
            yield 0, event
        return
    queue: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()

    async def pump(index: int, stream: EventStream) -> None:
        async for event in stream.until_done():
            await queue.put((index, event))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        done = 0
        while done < len(streams):
            index, event = await queue.get()
            done += isinstance(event, Finished | Failed)
            yield index, event
    finally:
        for task in tasks:
            task.cancel()
