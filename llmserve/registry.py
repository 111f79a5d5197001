"""ModelRegistry: the router of the design card. Resolves `default` and model ids, owns the workers.

An unknown model is always `ModelNotFound`; there is no fallback to the default model.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any, Literal

from llmserve.config import ModelConfig
from llmserve.engine.base import ChatMessage, EngineFactory, GenerationParams
from llmserve.errors import ModelNotFound, ShuttingDown
from llmserve.events import EventBus
from llmserve.jobs import EventStream, Generate
from llmserve.lifecycle import Estimator
from llmserve.progress import LoadProgress
from llmserve.residency import Residency
from llmserve.worker import ModelState, ModelWorker

DEFAULT_ALIAS = "default"
Preload = Literal["default", "all", "none"]

# The status names of the seed (mistral.rs). A model that is unloading still serves its running
# requests, so it reports `loaded` until the memory is freed.
_SEED_STATUS: dict[ModelState, str] = {
    ModelState.LOADED: "loaded",
    ModelState.UNLOADING: "loaded",
    ModelState.UNLOADED: "unloaded",
    ModelState.LOADING: "reloading",
    ModelState.FAILED: "internal_error",
}


class ModelRegistry:
    def __init__(
        self,
        models: Sequence[ModelConfig],
        default_id: str,
        factory: EngineFactory,
        residency: Residency | None = None,
        estimator: Estimator | None = None,
    ) -> None:
        self.residency = residency
        self.events = EventBus()
        self._workers = {m.api_id: ModelWorker(m, factory, residency, estimator) for m in models}
        for worker in self._workers.values():
            worker.on_state = self._state_changed
            worker.on_progress = self._progressed
        if default_id not in self._workers:
            raise ModelNotFound(default_id, list(self._workers))
        self.default_id = default_id
        self.created = int(time.time())
        self._started = False
        self.draining = False

    @property
    def workers(self) -> list[ModelWorker]:
        return list(self._workers.values())

    def start(self, preload: Preload = "default") -> None:
        """Starts every worker thread; `preload` loads some models in the background."""
        if self._started:
            return
        self._started = True
        for worker in self._workers.values():
            worker.start()
        targets = {"all": self.workers, "default": [self._workers[self.default_id]], "none": []}[preload]
        for worker in targets:
            worker.preload()

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stops the workers (blocking: call it off the event loop)."""
        if not self._started:
            return
        for worker in self._workers.values():
            worker.stop(timeout)
        self._started = False

    def begin_drain(self, timeout: float) -> threading.Timer:
        """The server is stopping: new generations get a 503 at once; running ones may finish for
        `timeout` seconds, then every one still in flight fails with a 503 `overloaded` error."""
        self.draining = True
        timer = threading.Timer(timeout, self._abort_in_flight)
        timer.daemon = True
        timer.start()
        return timer

    def _abort_in_flight(self) -> None:
        for worker in self._workers.values():
            worker.abort(ShuttingDown("the server is shutting down; this request was stopped"))

    def resolve(self, model: str | None) -> ModelWorker:
        """`None` or `"default"` → the default model; an unknown id → `ModelNotFound` (404)."""
        api_id = self.default_id if model is None or model == DEFAULT_ALIAS else model
        worker = self._workers.get(api_id)
        if worker is None:
            raise ModelNotFound(api_id, list(self._workers))
        return worker

    def status(self, model: str | None) -> str:
        return seed_status(self.resolve(model))

    def _state_changed(self, worker: ModelWorker, previous: ModelState, reason: str) -> None:
        self.events.publish(state_event(worker, previous, reason))

    def _progressed(self, worker: ModelWorker, progress: LoadProgress) -> None:
        self.events.publish(
            {"model": worker.api_id, "state": "loading", **progress.as_json(), "time": time.time()}
        )

    def check_room(self, worker: ModelWorker) -> None:
        """A model bigger than the whole memory budget is refused before anything is queued (400)."""
        error = worker.slot.too_big(compute=False)
        if error is not None and worker.state is not ModelState.LOADED:
            raise error

    def generate(
        self,
        model: str | None,
        messages: Sequence[ChatMessage],
        params: GenerationParams,
        keep_alive: float | None = None,
    ) -> tuple[ModelWorker, EventStream]:
        """Queues a generation (loading the model first if needed) and returns its event stream."""
        worker = self.resolve(model)
        if self.draining:
            raise ShuttingDown()
        self.check_room(worker)
        stream = EventStream()
        worker.submit(Generate(tuple(messages), params, stream, keep_alive))
        return worker, stream

    async def reload(self, model: str | None) -> ModelWorker:
        worker = self.resolve(model)
        self.check_room(worker)
        await worker.load()
        return worker

    async def unload(self, model: str | None) -> ModelWorker:
        worker = self.resolve(model)
        await worker.unload()
        return worker


def state_event(worker: ModelWorker, previous: ModelState, reason: str) -> dict[str, Any]:
    """The event of a state change, as `GET /v1/models/events` sends it."""
    event: dict[str, Any] = {
        "model": worker.api_id,
        "state": worker.state.value,
        "previous": previous.value,
        "status": seed_status(worker),
        "time": time.time(),
    }
    if worker.state is ModelState.LOADED:
        event["memory_bytes"] = worker.memory_bytes
        event["load_seconds"] = worker.slot.load_seconds
    if worker.state in (ModelState.UNLOADING, ModelState.UNLOADED, ModelState.FAILED):
        event["reason"] = reason  # unload, keep_alive, evicted, no_room, load_failed, failed, shutdown
    if worker.state is ModelState.FAILED:
        event["error"] = worker.last_error
    return event


def seed_status(worker: ModelWorker) -> str:
    return _SEED_STATUS[worker.state]
