"""ModelStatus: the snapshot of one model version across load, serve, unload and a failed load, and the
snapshots handed to observers at each state change. Scripted engines, no real model."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import pytest
from fakes import ConfiguredEngine, Factory, ScriptedEngine, scripted

from llmserve.config.entries import ModelConfig, PlainSpec
from llmserve.config.sampling import API_DEFAULTS, Sampling
from llmserve.engine.base import ChatMessage, GenerationParams
from llmserve.engine.progress import LoadProgress
from llmserve.errors import ModelLoadFailed
from llmserve.models.jobs import Event, EventStream, Failed, Finished
from llmserve.models.registry import ModelRegistry
from llmserve.models.status import ModelState, ModelStatus

M = ModelConfig("m", "org/m", PlainSpec(model_id="org/m"))
HI = [ChatMessage("user", "hi")]
Change = tuple[ModelState, ModelState, str | None]  # previous, state, reason


@asynccontextmanager
async def serving(
    factory: Factory, model: ModelConfig = M
) -> AsyncIterator[tuple[ModelRegistry, list[ModelStatus], list[Change]]]:
    """A started registry of `model`; yields it, the snapshots its observers got and the changes."""
    registry = ModelRegistry([model], model.api_id, factory)
    seen: list[ModelStatus] = []
    changes: list[Change] = []

    def observe(status: ModelStatus, previous: ModelState) -> None:
        seen.append(status)
        changes.append((previous, status.state, status.reason))

    registry.observers.append(observe)
    registry.start(preload="none")
    try:
        yield registry, seen, changes
    finally:
        await asyncio.to_thread(registry.shutdown, 10)


async def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"never true: {what}"
        await asyncio.sleep(0.01)


async def answer(registry: ModelRegistry, max_tokens: int | None = None) -> list[Event]:
    _, stream = registry.generate(None, HI, GenerationParams(max_tokens=max_tokens))
    return [event async for event in stream.until_done()]


def counts(status: ModelStatus) -> tuple[int, int, int]:
    return status.running, status.queue_depth, status.in_flight


def test_an_unloaded_model_shows_its_config_and_nothing_measured() -> None:
    model = dataclasses.replace(
        M, version="2", in_situ_quant="Q4K", max_batch_size=3, max_queue=5, sampling=Sampling(top_k=40)
    )
    status = ModelRegistry([model], "org/m", scripted(["a"])).status("org/m@2")
    assert status == ModelStatus(
        api_id="org/m",
        unit_id="org/m@2",
        version="2",
        version_label="2",
        kind="Plain",
        engine="transformers",
        quant_mode="nf4",
        state=ModelState.UNLOADED,
        reason=None,
        last_error=None,
        progress=None,
        memory_bytes=None,
        load_seconds=None,
        loaded_at=0.0,
        expires_at=None,
        sampling=status.sampling,
        queue_depth=0,
        running=0,
        capacity=8,
    )
    assert (status.api_status, status.in_memory, status.in_flight) == ("unloaded", False, 0)
    assert status.sampling.values == {**API_DEFAULTS, "top_k": 40}
    assert status.sampling.sources["top_k"] == "config" and status.sampling.sources["top_p"] == "api"
    with pytest.raises(dataclasses.FrozenInstanceError):
        status.state = ModelState.LOADED  # type: ignore[misc]


def test_load_serve_unload() -> None:
    gate = threading.Event()
    factory = Factory(lambda c: ScriptedEngine(["a", "b", "c"], memory=1234, step_delay=0.05), load_gate=gate)
    model = dataclasses.replace(M, max_batch_size=1, max_queue=2)

    async def main() -> None:
        async with serving(factory, model) as (registry, seen, changes):
            loading = asyncio.ensure_future(registry.reload(None))
            starting = LoadProgress("starting", 0.02)  # the factory waits at the gate
            await wait_for(lambda: registry.status(None).progress == starting, "load progress")
            status = registry.status(None)
            assert (status.state, status.api_status, status.reason) == (ModelState.LOADING, "reloading", None)
            assert status.memory_bytes is None and not status.in_memory
            gate.set()
            loaded = await loading
            assert (loaded.state, loaded.api_status, loaded.progress, loaded.reason) == (
                ModelState.LOADED,
                "loaded",
                None,
                None,
            )
            assert loaded.memory_bytes == 1234 and loaded.in_memory
            assert loaded.load_seconds is not None and loaded.load_seconds >= 0
            assert 0 < loaded.loaded_at <= time.monotonic()

            # one runs, two wait: the counts of the snapshot
            answers = [asyncio.ensure_future(answer(registry)) for _ in range(3)]
            await wait_for(lambda: counts(registry.status(None)) == (1, 2, 3), "one runs, two wait")
            for events in await asyncio.gather(*answers):
                assert isinstance(events[-1], Finished)
            idle = registry.status(None)
            assert counts(idle) == (0, 0, 0) and (idle.state, idle.capacity) == (ModelState.LOADED, 3)

            unloaded = await registry.unload(None)
            assert (unloaded.state, unloaded.api_status, unloaded.reason) == (
                ModelState.UNLOADED,
                "unloaded",
                "unload",
            )
            assert unloaded.memory_bytes == 1234 and not unloaded.in_memory  # the last load's figure
        assert changes == [
            (ModelState.UNLOADED, ModelState.LOADING, None),
            (ModelState.LOADING, ModelState.LOADED, None),
            (ModelState.LOADED, ModelState.UNLOADING, "unload"),
            (ModelState.UNLOADING, ModelState.UNLOADED, "unload"),
        ]
        at_load = seen[1]
        assert at_load.memory_bytes == 1234 and at_load.load_seconds == loaded.load_seconds
        assert seen[2].in_memory and seen[2].api_status == "loaded"  # unloading still serves

    asyncio.run(main())


def test_a_failed_load_says_why_and_a_later_load_clears_it() -> None:
    factory = scripted(["a"])
    factory.fail_with = RuntimeError("weights are corrupt")

    async def main() -> None:
        async with serving(factory) as (registry, _, changes):
            events = await answer(registry)
            assert isinstance(events[0], Failed) and isinstance(events[0].error, ModelLoadFailed)
            failed = registry.status(None)
            assert (failed.state, failed.api_status, failed.reason) == (
                ModelState.FAILED,
                "internal_error",
                "load_failed",
            )
            assert failed.last_error == "RuntimeError: weights are corrupt"
            assert failed.progress is None and failed.memory_bytes is None and not failed.in_memory
            assert changes == [
                (ModelState.UNLOADED, ModelState.LOADING, None),
                (ModelState.LOADING, ModelState.FAILED, "load_failed"),
            ]

            factory.fail_with = None
            again = await registry.reload(None)
            assert (again.state, again.reason, again.last_error) == (ModelState.LOADED, None, None)

    asyncio.run(main())


def test_a_fault_while_serving_fails_the_model() -> None:
    async def main() -> None:
        async with serving(scripted(["a", "b"], fail_at_step=1)) as (registry, _, changes):
            events = await answer(registry)
            assert isinstance(events[-1], Failed)
            failed = registry.status(None)
            assert (failed.state, failed.reason) == (ModelState.FAILED, "failed")
            assert failed.last_error == "RuntimeError: the model crashed"
            assert changes[-2:] == [
                (ModelState.LOADED, ModelState.UNLOADING, "failed"),
                (ModelState.UNLOADING, ModelState.FAILED, "failed"),
            ]

    asyncio.run(main())


def test_keep_alive_sets_the_expiry_then_unloads_with_its_reason() -> None:
    async def main() -> None:
        async with serving(scripted(["a"]), dataclasses.replace(M, keep_alive=600)) as (registry, _, _):
            await answer(registry)
            await wait_for(lambda: registry.status(None).expires_at is not None, "an expiry")
            expires_at = registry.status(None).expires_at
            assert expires_at is not None and abs(expires_at - (time.time() + 600)) < 5
        async with serving(scripted(["a"]), dataclasses.replace(M, keep_alive=0)) as (registry, _, changes):
            await answer(registry)
            await wait_for(lambda: registry.status(None).state is ModelState.UNLOADED, "unloaded")
            status = registry.status(None)
            assert (status.reason, status.expires_at) == ("keep_alive", None)
            assert changes[-1] == (ModelState.UNLOADING, ModelState.UNLOADED, "keep_alive")

    asyncio.run(main())


def test_the_generation_config_joins_the_sampling_defaults_at_the_first_load() -> None:
    factory = Factory(lambda c: ConfiguredEngine(["a"], {"temperature": 0.6, "top_p": 0.9}))
    model = dataclasses.replace(M, sampling=Sampling(top_p=0.5))

    async def main() -> None:
        async with serving(factory, model) as (registry, _, _):
            before = registry.status(None).sampling
            assert before.sources["temperature"] == "api" and before.values["top_p"] == 0.5
            await registry.reload(None)
            await registry.unload(None)
            after = registry.status(None).sampling  # known from the load on, through an unload
            assert (after.values["temperature"], after.sources["temperature"]) == (0.6, "generation_config")
            assert (after.values["top_p"], after.sources["top_p"]) == (0.5, "config")

    asyncio.run(main())


def fields(statuses: Sequence[ModelStatus]) -> list[tuple[str, str]]:
    return [(s.unit_id, s.api_status) for s in statuses]


def test_statuses_list_every_version_in_config_order() -> None:
    models = [
        M,
        dataclasses.replace(M, label="v1", api_id="v", version="1"),
        dataclasses.replace(M, label="v2", api_id="v", version="2"),
    ]
    registry = ModelRegistry(models, "org/m", scripted(["a"]))
    assert fields(registry.statuses()) == [("org/m", "unloaded"), ("v@1", "unloaded"), ("v@2", "unloaded")]
    assert fields(registry.versions("v")) == [("v@1", "unloaded"), ("v@2", "unloaded")]
    assert registry.unit("v@1") == registry.version("v", "1") and registry.unit("nope") is None


def test_a_request_leaves_the_counts_before_its_client_hears_the_end(monkeypatch: pytest.MonkeyPatch) -> None:
    """The counts at the moment each request's last event is pushed: a client that has its answer never
    reads a snapshot that still counts it (the worker drops it from its list only after the step)."""
    at_end: list[tuple[int, int, int]] = []
    holder: list[ModelRegistry] = []
    push = EventStream.push

    def recording(stream: EventStream, event: Event) -> None:
        if isinstance(event, Finished):
            at_end.append(counts(holder[0].status(None)))
        push(stream, event)

    monkeypatch.setattr(EventStream, "push", recording)
    model = dataclasses.replace(M, max_batch_size=2, max_queue=2)

    async def main() -> None:
        async with serving(scripted(["a", "b"]), model) as (registry, _, _):
            holder.append(registry)
            await registry.reload(None)
            answers = await asyncio.gather(*(answer(registry) for _ in range(3)))
            assert all(isinstance(events[-1], Finished) for events in answers)

    asyncio.run(main())
    assert len(at_end) == 3 and at_end[-1] == (0, 0, 0), at_end


def test_decoded_tokens_count_as_they_come_and_the_footprint_stays_after_an_unload(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The count already holds a request's tokens when its last event is pushed (read at that moment:
    a client that reads it right after its answer could otherwise race the worker thread)."""
    factory = Factory(lambda c: ScriptedEngine(["a"] * 20, memory=1234, step_delay=0.02))
    at_end: list[int] = []
    holder: list[ModelRegistry] = []
    push = EventStream.push

    def recording(stream: EventStream, event: Event) -> None:
        if isinstance(event, Finished):
            at_end.append(holder[0].status(None).tokens_generated)
        push(stream, event)

    monkeypatch.setattr(EventStream, "push", recording)

    async def main() -> None:
        async with serving(factory) as (registry, _, _):
            holder.append(registry)
            running = asyncio.ensure_future(answer(registry))
            await wait_for(lambda: registry.status(None).tokens_generated >= 3, "tokens while it runs")
            assert registry.status(None).running == 1  # counted before the request ends
            events = await running
            assert isinstance(events[-1], Finished)
            status = registry.status(None)
            assert status.tokens_generated == events[-1].completion_tokens == 21  # 20 pieces and the EOS
            assert status.footprint == (("cpu", 1234),)
            await answer(registry, max_tokens=2)
            assert registry.status(None).tokens_generated == 23
            unloaded = await registry.unload(None)
            assert (unloaded.footprint, unloaded.tokens_generated) == ((("cpu", 1234),), 23)

    asyncio.run(main())
    assert at_end == [21, 23]
