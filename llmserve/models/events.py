"""Model lifecycle events (loading, loaded, unloading, unloaded, failed) for `GET /v1/models/events`.

Workers publish from their threads; each subscriber (one SSE client) has its own bounded asyncio queue on
its event loop. A subscriber that falls behind loses its oldest events, never blocks a worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from typing import Any

QUEUE_SIZE = 1000


def _offer(queue: asyncio.Queue[dict[str, Any]], event: dict[str, Any]) -> None:
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(event)


class EventBus:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[dict[str, Any]]]] = []

    def publish(self, event: dict[str, Any]) -> None:
        """Any thread."""
        with self._lock:
            subscribers = list(self._subscribers)
        for loop, queue in subscribers:
            with contextlib.suppress(RuntimeError):  # that subscriber's loop is closed
                loop.call_soon_threadsafe(_offer, queue, event)

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[asyncio.Queue[dict[str, Any]]]:
        """On the event loop: a queue that receives every event published from now on."""
        entry = (asyncio.get_running_loop(), asyncio.Queue[dict[str, Any]](QUEUE_SIZE))
        with self._lock:
            self._subscribers.append(entry)
        try:
            yield entry[1]
        finally:
            with self._lock:
                self._subscribers.remove(entry)
