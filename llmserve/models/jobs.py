"""What crosses between the event loop and a worker thread: messages in, events and replies out.

Both `EventStream` and `Reply` are created on the event loop *before* their message is enqueued, and
the worker hands results back with `loop.call_soon_threadsafe`, so nothing is lost to a race and the
event loop never waits on a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from llmserve.config.keys import Tenant
from llmserve.engine.base import ChatMessage, FinishReason, GenerationParams
from llmserve.errors import LLMServeError

T = TypeVar("T")


@dataclass(frozen=True)
class Started:
    """The model is loaded and the prompt accepted; generation begins."""

    prompt_tokens: int
    echo: str = ""  # the prompt's text, when the request asked for it back (/v1/completions `echo`)


@dataclass(frozen=True)
class TextDelta:
    text: str
    logprobs: tuple[dict[str, Any], ...] = ()  # OpenAI-shaped entries of the tokens behind `text`


@dataclass(frozen=True)
class Finished:
    reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    # time.monotonic() of the first generated token, which may carry no text of its own (a held-back
    # stop prefix or part of a UTF-8 character): the time to first token even when no delta came first
    first_token_at: float | None = field(default=None, compare=False)
    stop_sequence: str | None = None  # the stop string that ended it (Anthropic's `stop_sequence`)


@dataclass(frozen=True)
class Failed:
    error: LLMServeError


Event = Started | TextDelta | Finished | Failed


class EventStream:
    """The events of one generation. The worker pushes from its thread; the request awaits them."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._cancelled = threading.Event()

    # -- worker side --
    def push(self, event: Event) -> None:
        if self._cancelled.is_set():
            return
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, event)
        except RuntimeError:  # the event loop is gone: nobody will read this stream any more
            self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    # -- event loop side --
    async def get(self) -> Event:
        return await self._queue.get()

    def cancel(self) -> None:
        """The client is gone: the worker drops the sequence before its next step."""
        self._cancelled.set()

    async def until_done(self) -> AsyncIterator[Event]:
        """Yields events up to and including the `Finished` or `Failed` one."""
        while True:
            event = await self.get()
            yield event
            if isinstance(event, Finished | Failed):
                return


class Reply(Generic[T]):
    """A one-shot answer from the worker thread to an awaiting coroutine."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.future: asyncio.Future[T] = self._loop.create_future()

    def set(self, value: T) -> None:
        self._post(value, None)

    def fail(self, error: BaseException) -> None:
        self._post(None, error)

    def _post(self, value: T | None, error: BaseException | None) -> None:
        with contextlib.suppress(RuntimeError):  # the event loop is gone: nobody awaits this
            self._loop.call_soon_threadsafe(self._resolve, value, error)

    def _resolve(self, value: T | None, error: BaseException | None) -> None:
        if self.future.done():
            return
        if error is not None:
            self.future.set_exception(error)
        else:
            self.future.set_result(value)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Generate:
    messages: tuple[ChatMessage, ...]
    params: GenerationParams
    stream: EventStream
    keep_alive: float | None = None  # this request's keep_alive (seconds); None: the model's own
    queued_at: float = field(default_factory=time.monotonic)
    prompt: str | tuple[int, ...] | None = None  # a raw prompt (/v1/completions) instead of the chat
    echo: bool = False  # send the raw prompt's text back in `Started`
    tools: tuple[dict[str, Any], ...] | None = None  # offered to the model through its chat template
    tenant: Tenant | None = None  # whose request (keys file): its share of the model; None: no keys


@dataclass(frozen=True)
class Load:
    reply: Reply[None] | None


@dataclass(frozen=True)
class Unload:
    reply: Reply[None]


@dataclass(frozen=True)
class Abort:
    """Fail every request running or waiting now with `error` (the end of a drain)."""

    error: LLMServeError


@dataclass(frozen=True)
class Shutdown:
    pass


@dataclass(frozen=True)
class Evict:
    """Another model needs the slot: unload if idle. Answered from the worker thread (True: unloaded)."""

    done: Future[bool]


@dataclass(frozen=True)
class Yield:
    """Another model waits for room: serve the requests queued before `since`, then unload. None: cancel."""

    since: float | None


@dataclass(frozen=True)
class Embed:
    """Vectors for `inputs` (texts, or token ids); the reply carries (vectors, tokens per input)."""

    inputs: tuple[str | tuple[int, ...], ...]
    reply: Reply[tuple[list[list[float]], list[int]]]


Message = Generate | Load | Unload | Abort | Shutdown | Evict | Yield | Embed
