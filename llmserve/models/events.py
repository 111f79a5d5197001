"""Model lifecycle events (loading, loaded, unloading, unloaded, failed) for `GET /v1/models/events`.

The registry publishes one event per state change of a model version, made from the `ModelStatus`
snapshot taken at the change, and one per load progress report.

Workers publish from their threads; each subscriber (one SSE client) has its own bounded asyncio queue on
its event loop. A subscriber that falls behind loses its oldest events, never blocks a worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

from llmserve.engine.progress import LoadProgress
from llmserve.models.status import ModelState, ModelStatus

QUEUE_SIZE = 1000


def state_event(status: ModelStatus, previous: ModelState) -> dict[str, Any]:
    """The event of a state change (`status`: the snapshot taken at the change)."""
    event: dict[str, Any] = {
        "model": status.unit_id,
        "state": status.state.value,
        "previous": previous.value,
        "status": status.api_status,
        "time": time.time(),
    }
    if status.state is ModelState.LOADED:
        event["memory_bytes"] = status.memory_bytes
        event["load_seconds"] = status.load_seconds
    if status.state in (ModelState.UNLOADING, ModelState.UNLOADED, ModelState.FAILED):
        event["reason"] = status.reason
    if status.state is ModelState.FAILED:
        event["error"] = status.last_error
    return event


def progress_event(unit_id: str, progress: LoadProgress) -> dict[str, Any]:
    """The event of a load progress report."""
    return {"model": unit_id, "state": "loading", **progress.as_json(), "time": time.time()}


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
