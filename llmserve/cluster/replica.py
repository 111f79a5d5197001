"""A Ray Serve replica: one whole llmserve app, its registry under its own memory budget, built by
build.py from the same command line as `llmserve multi-model`'s. Ray Serve's model multiplexing
(`serve.multiplexed`) keeps the `--models-per-replica` most recently used models here and routes each
request to a replica that holds its model; dropping one from that list unloads it from the registry."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from llmserve.build import build_app, setup_from_args
from llmserve.cluster.asgi import Forwarded, Head, run_app
from llmserve.cluster.listing import HEARTBEAT
from llmserve.cluster.plan import REPLICA_HEADER, ClusterPlan
from llmserve.models.registry import ModelRegistry

log = logging.getLogger(__name__)
UNLOAD_WAIT = 300.0  # seconds an evicted model's running requests may take before the next model loads


class Resident:
    """What the multiplexing holds for one model version on this replica. Ray Serve calls `__del__` (in a
    thread) when its least-recently-used list drops the model: the registry unloads it then, so the next
    model loads into the room it leaves."""

    def __init__(self, unit: str, unload: Callable[[str], None]) -> None:
        self.unit = unit
        self._unload = unload
        self._released = False

    def __del__(self) -> None:
        if not self._released:
            self._released = True
            self._unload(self.unit)


class Replica:
    # Ray Serve awaits an async constructor (the app's lifespan starts the registry here)
    async def __init__(self, plan: ClusterPlan, directory: DeploymentHandle[Any]) -> None:  # type: ignore[misc]
        self.name = serve.get_replica_context().replica_id.unique_id
        self.app = build_app(setup_from_args(plan.args), plan.options)
        self._registry: ModelRegistry = self.app.state.registry
        self._keys = plan.options.api_keys
        self._directory = directory
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._stack = contextlib.AsyncExitStack()
        await self._stack.enter_async_context(self.app.router.lifespan_context(self.app))
        self._changed = asyncio.Event()
        self._registry.observers.append(
            lambda status, previous: self._loop.call_soon_threadsafe(self._changed.set)
        )
        self._reporter = asyncio.create_task(self._report())

        async def hold(unit: str) -> Resident:  # wired here: the limit is the command line's
            return Resident(unit, self._unload)

        self._hold = serve.multiplexed(max_num_models_per_replica=plan.models_per_replica)(hold)

    async def forward(self, request: Forwarded) -> AsyncIterator[Head | bytes]:
        """The request's answer from this replica's app: its head, then its body as it is sent."""
        unit = serve.get_multiplexed_model_id()
        if unit and request.holds:
            await self._hold(unit)
        async for piece in run_app(self.app, request, ((REPLICA_HEADER, self.name.encode()),)):
            yield piece

    def _unload(self, unit: str) -> None:
        """Unloads `unit` from the registry; from Ray's thread, waits until it is out of memory."""
        future = asyncio.run_coroutine_threadsafe(self._registry.unload(unit), self._loop)
        if threading.get_ident() != self._thread:
            try:
                future.result(UNLOAD_WAIT)
            except Exception as exc:  # the unload failed or took too long: the next load still tries
                log.warning("unloading %s for the next model: %s", unit, exc)

    async def cards(self) -> list[dict[str, Any]]:
        """This replica's /v1/models cards, as its own route renders them."""
        headers: tuple[tuple[bytes, bytes], ...] = ()
        if self._keys:
            headers = ((b"authorization", f"Bearer {self._keys[0]}".encode()),)
        body = b"".join(
            [
                p
                async for p in run_app(self.app, Forwarded("GET", "/v1/models", b"", headers, b""))
                if isinstance(p, bytes)
            ]
        )
        data: list[dict[str, Any]] = json.loads(body)["data"]
        return data

    async def _report(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), HEARTBEAT)
            self._changed.clear()
            try:
                await self._directory.report.remote(self.name, await self.cards())
            except Exception as exc:  # the directory is being replaced: the next beat reports again
                log.warning("reporting to the directory: %s", exc)

    async def __del__(self) -> None:
        self._reporter.cancel()
        with contextlib.suppress(Exception):  # the directory may be going too
            await asyncio.wait_for(self._directory.forget.remote(self.name), 1.0)
        await self._stack.aclose()
