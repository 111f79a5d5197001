"""ModelRegistry: the models this server serves, one worker per model version. It resolves the names a
request uses (`default`, an API id, `ID@VERSION`) to a version, admits work for it, loads, unloads,
promotes and registers versions, and answers with each version's `ModelStatus` snapshot.

An unknown model is always `ModelNotFound`; there is no fallback to the default model. A model may have
several versions (config entries with the same API id and a `version` each), each its own worker:
`ID@VERSION` names one, `ID` the default version (marked `default_version`, else the newest), which
`promote` switches atomically once the new version is loaded.
"""

from __future__ import annotations

import asyncio
import fnmatch
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

from llmserve.config.entries import ModelConfig
from llmserve.config.keys import Tenant
from llmserve.engine.base import ChatMessage, EngineFactory, GenerationParams
from llmserve.engine.memory import available_memory
from llmserve.engine.progress import LoadProgress
from llmserve.errors import ModelNotAllowed, ModelNotFound, ShuttingDown
from llmserve.models.events import EventBus, progress_event, state_event
from llmserve.models.jobs import EventStream, Generate
from llmserve.models.kv_budget import KVLedger
from llmserve.models.lifecycle import Estimator
from llmserve.models.residency import Residency
from llmserve.models.status import ModelState, ModelStatus
from llmserve.models.usage import Usage
from llmserve.models.worker import ModelWorker

DEFAULT_ALIAS = "default"
Preload = Literal["default", "all", "none"]
STOP_TIMEOUT = 30.0  # seconds a replaced version's thread has to end


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
        budget_left = residency.weights_left if residency is not None else (lambda device: None)
        self.kv = KVLedger(available_memory, budget_left)
        self.usage = Usage()  # per tenant and model, as it happens
        if residency is not None:
            residency.kv_reserved = self.kv.reserved
            residency.served = self.usage.recent_tokens
        self.events = EventBus()
        # called on every state change, from the worker's thread, with the snapshot taken at the change
        # and the previous state (metrics)
        self.observers: list[Callable[[ModelStatus, ModelState], None]] = []
        self._factory, self._estimator = factory, estimator
        self._workers: dict[str, ModelWorker] = {}
        self._defaults: dict[str, str] = {}  # versioned API id -> unit id of its default version
        for model in models:
            self._add(model)
        self.resolve(default_id)  # unknown: ModelNotFound
        self.default_id = default_id  # an API id follows its default version (promote); ID@V stays
        self._lock = threading.Lock()  # the event loop and worker threads read; changes take it
        self.created = int(time.time())
        self._started = False
        self.draining = False

    def _add(self, model: ModelConfig) -> ModelWorker:
        worker = ModelWorker(model, self._factory, self.residency, self._estimator, self.kv, self.usage)
        worker.on_state = self._state_changed
        worker.on_progress = self._progressed
        self._workers[model.unit_id] = worker
        if model.version is not None:
            versions = [w.config for w in self._versions(model.api_id)]
            marked = [c for c in versions if c.default_version]
            chosen = marked[0] if marked else max(versions, key=lambda c: version_key(c.version or ""))
            self._defaults[model.api_id] = chosen.unit_id
        return worker

    def statuses(self) -> list[ModelStatus]:
        """Every model version, in config order."""
        return [w.status() for w in self._workers.values()]

    def api_ids(self) -> list[str]:
        """Every model's API id once, in config order."""
        return list(dict.fromkeys(w.config.api_id for w in self._workers.values()))

    def _versions(self, api_id: str) -> list[ModelWorker]:
        return [w for w in self._workers.values() if w.config.api_id == api_id]

    def versions(self, api_id: str) -> list[ModelStatus]:
        """Every version of the model `api_id`, in config order."""
        return [w.status() for w in self._versions(api_id)]

    def _version(self, api_id: str, version: str | None) -> ModelWorker:
        if api_id not in self.api_ids():
            raise ModelNotFound(api_id, self.api_ids())
        if version is None:
            return self.resolve(api_id)
        for worker in self._versions(api_id):
            if worker.config.version_label == version:
                return worker
        raise ModelNotFound(f"{api_id}@{version}", self.unit_ids())

    def version(self, api_id: str, version: str | None) -> ModelStatus:
        """One version of the model `api_id` (None: its default version), as the V2 API names them; an
        unknown API id or version → `ModelNotFound`."""
        return self._version(api_id, version).status()

    def unit_ids(self) -> list[str]:
        return list(self._workers)

    def default_unit(self, api_id: str) -> str | None:
        """The unit id `api_id` means now, when it has versions."""
        return self._defaults.get(api_id)

    def start(self, preload: Preload = "default") -> None:
        """Starts every worker thread; `preload` loads some models in the background."""
        if self._started:
            return
        self._started = True
        for worker in self._workers.values():
            worker.start()
        targets = {"all": list(self._workers.values()), "default": [self.resolve(None)], "none": []}[preload]
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
        """`None` or `"default"` → the default model; `ID` → its default version; `ID@VERSION` → that
        version; a name no model has that matches an entry's `model_aliases` pattern → that entry's
        API id (exact names always win); an unknown id → `ModelNotFound` (404)."""
        name = self.default_id if model is None or model == DEFAULT_ALIAS else model
        worker = self._workers.get(self._defaults.get(name, name))
        if worker is not None:
            return worker
        if "@" in name:  # ID@VERSION of a model whose only version is the implicit "1"
            api_id, _, version = name.rpartition("@")
            if api_id in self.api_ids():
                return self._version(api_id, version)
        for worker in list(self._workers.values()):
            if any(fnmatch.fnmatchcase(name, pattern) for pattern in worker.config.model_aliases):
                return self.resolve(worker.config.api_id)
        raise ModelNotFound(name, self.unit_ids())

    async def promote(self, api_id: str, version: str) -> tuple[ModelStatus, ModelStatus]:
        """Loads `version` of `api_id` (if needed) while the current default keeps serving, then makes it
        the default for new requests in one assignment; running requests finish where they are.
        Returns the promoted version and the previous default."""
        worker = self._version(api_id, version)
        worker.check_room()
        await worker.load()
        with self._lock:
            old = self.resolve(api_id)
            previous = old.config.unit_id
            self._defaults[api_id] = worker.config.unit_id
        self.events.publish(
            {
                "model": api_id,
                "state": "promoted",
                "version": version,
                "previous": previous,
                "time": time.time(),
            }
        )
        return worker.status(), old.status()

    async def register(self, model: ModelConfig) -> ModelStatus:
        """Adds a model at run time, or replaces the version of the same name: the new one is started;
        the one it replaces lets its running requests finish, unloads, and its thread ends."""
        with self._lock:
            old = self._workers.get(model.unit_id)
            worker = self._add(model)
        if self._started:
            worker.start()
        if old is not None:
            await old.unload()
            await asyncio.to_thread(old.stop, STOP_TIMEOUT)
        return worker.status()

    def status(self, model: str | None) -> ModelStatus:
        """The model `model` names now (as `resolve`)."""
        return self.resolve(model).status()

    def _state_changed(self, status: ModelStatus, previous: ModelState) -> None:
        self.events.publish(state_event(status, previous))
        for observer in self.observers:
            observer(status, previous)

    def unit(self, unit_id: str) -> ModelStatus | None:
        worker = self._workers.get(unit_id)
        return None if worker is None else worker.status()

    def _progressed(self, unit_id: str, progress: LoadProgress) -> None:
        self.events.publish(progress_event(unit_id, progress))

    def resolve_for(self, model: str | None, tenant: Tenant | None) -> ModelWorker:
        """`resolve`, for a tenant (None: a server without keys): a model its key may not use → 403
        `model_not_allowed` (server/errors.py lists only its models in a 404)."""
        worker = self.resolve(model)
        if tenant is not None and not tenant.may_use(worker.config.api_id, worker.unit_id):
            raise ModelNotAllowed(model or DEFAULT_ALIAS, tenant.name)
        return worker

    def admit(self, model: str | None, tenant: Tenant | None = None) -> ModelWorker:
        """The worker that is to take new work for `model` (a generation, embeddings): the one check
        every such request passes before it is queued. Unknown → 404; not for this tenant → 403; the
        server draining → 503; a model bigger than the whole memory budget → 400."""
        worker = self.resolve_for(model, tenant)
        if self.draining:
            raise ShuttingDown()
        worker.check_room()
        return worker

    def generate(
        self,
        model: str | None,
        messages: Sequence[ChatMessage],
        params: GenerationParams,
        keep_alive: float | None = None,
        prompt: str | tuple[int, ...] | None = None,
        echo: bool = False,
        tools: tuple[dict[str, Any], ...] | None = None,
        tenant: Tenant | None = None,
    ) -> tuple[str, EventStream]:
        """Queues a generation (loading the model first if needed) and returns the unit id of the model
        version that runs it and its event stream; `prompt`: a raw prompt instead of the chat `messages`;
        `tenant`: whose request it is (its model scope and its share of the model)."""
        worker = self.admit(model, tenant)
        stream = EventStream()
        job = Generate(
            tuple(messages), params, stream, keep_alive, prompt=prompt, echo=echo, tools=tools, tenant=tenant
        )
        worker.submit(job)
        return worker.unit_id, stream

    async def reload(self, model: str | None) -> ModelStatus:
        """Loads the model `model` names (a loaded one stays as it is)."""
        return await self._load(self.resolve(model))

    async def load_unit(self, unit_id: str) -> ModelStatus:
        """Loads the version `unit_id` (a `ModelStatus.unit_id`; a loaded one stays as it is)."""
        worker = self._workers.get(unit_id)
        if worker is None:
            raise ModelNotFound(unit_id, self.unit_ids())
        return await self._load(worker)

    async def _load(self, worker: ModelWorker) -> ModelStatus:
        worker.check_room()
        await worker.load()
        return worker.status()

    async def unload(self, model: str | None) -> ModelStatus:
        """Unloads the model once its running requests finish."""
        worker = self.resolve(model)
        await worker.unload()
        return worker.status()

    async def unload_versions(self, api_id: str) -> None:
        """Unloads every version of the model `api_id` (404 when unknown), one after the other."""
        self._version(api_id, None)
        for worker in self._versions(api_id):
            await worker.unload()


def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Orders versions naturally: numbers by value ("2" < "10"), then text ("v1.2" < "v1.10")."""
    parts = re.findall(r"\d+|[^\d]+", version)
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts)
