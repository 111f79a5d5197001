"""ModelRegistry: which version a name means, the checks before work is queued (404, 503, 400), one load
for concurrent first requests, and the statuses of load, unload, promote and replace. Scripted engines."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import pytest
from fakes import Factory, ScriptedEngine, scripted

from llmserve.config.entries import ModelConfig, PlainSpec
from llmserve.config.sizes import Budget
from llmserve.engine.base import ChatMessage, GenerationParams
from llmserve.engine.footprint import Estimate
from llmserve.errors import ModelNotFound, ModelTooLarge, Overloaded, ShuttingDown
from llmserve.models.jobs import Event, Finished
from llmserve.models.registry import ModelRegistry
from llmserve.models.residency import Residency
from llmserve.models.status import ModelState

A = ModelConfig("a", "org/a", PlainSpec(model_id="org/a"))
V9 = dataclasses.replace(A, label="v9", api_id="v", version="9")
V10 = dataclasses.replace(A, label="v10", api_id="v", version="10")
WA = dataclasses.replace(A, label="wa", api_id="w", version="a", default_version=True)
WB = dataclasses.replace(A, label="wb", api_id="w", version="b")
MODELS = (A, V9, V10, WA, WB)
HI = [ChatMessage("user", "hi")]


@asynccontextmanager
async def running(
    factory: Factory, models: Sequence[ModelConfig] = MODELS, **kwargs: object
) -> AsyncIterator[ModelRegistry]:
    registry = ModelRegistry(models, models[0].api_id, factory, **kwargs)  # type: ignore[arg-type]
    registry.start(preload="none")
    try:
        yield registry
    finally:
        await asyncio.to_thread(registry.shutdown, 10)


async def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"never true: {what}"
        await asyncio.sleep(0.01)


async def answer(registry: ModelRegistry, model: str | None = None) -> list[Event]:
    _, stream = registry.generate(model, HI, GenerationParams())
    return [event async for event in stream.until_done()]


def statuses(registry: ModelRegistry) -> dict[str, str]:
    return {s.unit_id: s.api_status for s in registry.statuses()}


def test_names_resolve_to_one_version() -> None:
    registry = ModelRegistry(MODELS, "org/a", scripted(["x"]))
    assert registry.api_ids() == ["org/a", "v", "w"]
    assert registry.unit_ids() == ["org/a", "v@9", "v@10", "w@a", "w@b"]
    resolved = {
        name: registry.resolve(name).unit_id
        for name in (None, "default", "org/a", "org/a@1", "v", "v@9", "v@10", "w", "w@b")
    }
    assert resolved == {
        None: "org/a",
        "default": "org/a",
        "org/a": "org/a",
        "org/a@1": "org/a",  # the implicit version "1" of a model with one version
        "v": "v@10",  # the newest, in natural order
        "v@9": "v@9",
        "v@10": "v@10",
        "w": "w@a",  # marked default_version
        "w@b": "w@b",
    }
    assert (registry.default_unit("v"), registry.default_unit("org/a")) == ("v@10", None)
    assert registry.version("v", None).unit_id == "v@10" and registry.version("v", "9").unit_id == "v@9"
    assert registry.status("w").version == "a"


@pytest.mark.parametrize("name", ["nope", "v@3", "org/a@2", "v9", "@9"])
def test_an_unknown_name_is_a_404_never_the_default_model(name: str) -> None:
    registry = ModelRegistry(MODELS, "org/a", scripted(["x"]))
    with pytest.raises(ModelNotFound) as caught:
        registry.resolve(name)
    assert caught.value.status == 404 and caught.value.code == "model_not_found"
    assert caught.value.message == (
        f"The model '{name}' does not exist. Available models: default, org/a, v@9, v@10, w@a, w@b."
    )
    for call in (registry.status, registry.admit, registry.resolve):
        with pytest.raises(ModelNotFound):
            call(name)


def test_an_unknown_default_model_is_refused() -> None:
    with pytest.raises(ModelNotFound):
        ModelRegistry([A], "nope", scripted(["x"]))


def test_admit_refuses_while_draining_with_a_503() -> None:
    registry = ModelRegistry([A], "org/a", scripted(["x"]))
    assert registry.admit(None).unit_id == "org/a"
    timer = registry.begin_drain(60)
    try:
        with pytest.raises(ShuttingDown) as caught:
            registry.admit(None)
        assert caught.value.status == 503 and caught.value.code == "overloaded"
    finally:
        timer.cancel()


def test_admit_refuses_a_model_bigger_than_the_whole_budget_with_a_400() -> None:
    def estimator(config: ModelConfig) -> Estimate:
        return Estimate(weights={"cpu": 5000 if config.api_id == "org/a" else 100}, kv_reserve={})

    async def main() -> None:
        residency = Residency(budget=Budget(every=1000))
        async with running(scripted(["x"]), residency=residency, estimator=estimator) as registry:

            def refused() -> bool:
                try:
                    registry.admit("org/a")
                except ModelTooLarge:
                    return True
                return False

            await wait_for(refused, "the estimate is known")  # read by the worker thread at its start
            with pytest.raises(ModelTooLarge) as caught:
                registry.admit("org/a")
            assert caught.value.status == 400 and caught.value.param == "model"
            assert "more than the whole --memory-budget" in caught.value.message
            assert registry.admit("v").unit_id == "v@10"  # the others fit
            events = await answer(registry, "v")
            assert isinstance(events[-1], Finished)

    asyncio.run(main())


def test_a_full_model_refuses_with_a_503_before_queueing() -> None:
    gate = threading.Event()
    factory = Factory(lambda c: ScriptedEngine(["x"]), load_gate=gate)

    async def main() -> None:
        async with running(factory, [dataclasses.replace(A, max_batch_size=1, max_queue=0)]) as registry:
            first = asyncio.ensure_future(answer(registry))
            await wait_for(lambda: registry.status(None).in_flight == 1, "the first accepted")
            with pytest.raises(Overloaded) as caught:
                registry.generate(None, HI, GenerationParams())
            assert caught.value.status == 503 and caught.value.retry_after == 1
            gate.set()
            assert isinstance((await first)[-1], Finished)

    asyncio.run(main())


def test_concurrent_first_requests_cause_one_load() -> None:
    gate = threading.Event()
    factory = Factory(lambda c: ScriptedEngine(["x", "y"]), load_gate=gate)

    async def main() -> None:
        async with running(factory) as registry:
            answers = [asyncio.ensure_future(answer(registry)) for _ in range(8)]
            await wait_for(lambda: registry.status(None).state is ModelState.LOADING, "loading")
            assert registry.status(None).api_status == "reloading"
            gate.set()
            for events in await asyncio.gather(*answers):
                assert isinstance(events[-1], Finished)
            assert registry.status(None).api_status == "loaded"
        assert factory.loads == ["org/a"]

    asyncio.run(main())


def test_reload_and_unload_answer_with_the_status() -> None:
    factory = scripted(["x"])

    async def main() -> None:
        async with running(factory) as registry:
            assert set(statuses(registry).values()) == {"unloaded"}
            loaded = await registry.reload(None)
            assert (loaded.unit_id, loaded.api_status) == ("org/a", "loaded")
            assert (await registry.reload("org/a")).api_status == "loaded"  # loaded already: no new load
            unloaded = await registry.unload("default")
            assert (unloaded.unit_id, unloaded.api_status, unloaded.reason) == ("org/a", "unloaded", "unload")
            assert (await registry.reload("v@9")).unit_id == "v@9"  # that version only
            assert statuses(registry) == {
                "org/a": "unloaded",
                "v@9": "loaded",
                "v@10": "unloaded",
                "w@a": "unloaded",
                "w@b": "unloaded",
            }
            await registry.load_unit("v@10")
            await registry.unload_versions("v")
            assert set(statuses(registry).values()) == {"unloaded"}
            with pytest.raises(ModelNotFound):
                await registry.unload("nope")
            with pytest.raises(ModelNotFound):
                await registry.load_unit("v")  # an API id with versions is no unit
        assert factory.loads == ["org/a", "v@9", "v@10"]

    asyncio.run(main())


def test_promote_loads_the_version_then_makes_it_the_default() -> None:
    async def main() -> None:
        async with running(scripted(["x"])) as registry:
            promoted, previous = await registry.promote("v", "9")
            assert (promoted.unit_id, promoted.api_status) == ("v@9", "loaded")
            assert (previous.unit_id, previous.api_status) == ("v@10", "unloaded")
            assert registry.resolve("v").unit_id == "v@9" and registry.default_unit("v") == "v@9"
            with pytest.raises(ModelNotFound):
                await registry.promote("v", "3")

    asyncio.run(main())


def test_register_replaces_a_version_and_stops_the_old_one() -> None:
    async def main() -> None:
        async with running(scripted(["x"]), [A]) as registry:
            await registry.reload(None)
            old = registry.resolve(None)
            status = await registry.register(dataclasses.replace(A, max_queue=7))
            assert (status.unit_id, status.state, status.capacity) == ("org/a", ModelState.UNLOADED, 71)
            assert old.closing and registry.resolve(None) is not old
            added = await registry.register(dataclasses.replace(A, label="b", api_id="org/b"))
            assert added.unit_id == "org/b" and registry.api_ids() == ["org/a", "org/b"]
            assert isinstance((await answer(registry, "org/b"))[-1], Finished)

    asyncio.run(main())
