"""The worker's state machine and decode loop, with scripted engines (exact text, exact events)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fakes import Factory, ScriptedEngine, scripted

from llmserve.config.entries import ModelConfig, PlainSpec
from llmserve.engine.base import ChatMessage, GenerationParams
from llmserve.errors import ContextLengthExceeded, InternalError, ModelLoadFailed, Overloaded
from llmserve.models.jobs import Event, Failed, Finished, Started, TextDelta
from llmserve.models.registry import ModelRegistry
from llmserve.models.status import ModelState

A = ModelConfig("a", "org/a", PlainSpec(model_id="org/a"))
B = ModelConfig("b", "org/b", PlainSpec(model_id="org/b"))
HI = [ChatMessage("user", "hi")]


@asynccontextmanager
async def running(factory: Factory, models: Sequence[ModelConfig] = (A,)) -> AsyncIterator[ModelRegistry]:
    registry = ModelRegistry(models, models[0].api_id, factory)
    registry.start(preload="none")
    try:
        yield registry
    finally:
        await asyncio.to_thread(registry.shutdown, 10)


async def generate(
    registry: ModelRegistry,
    params: GenerationParams | None = None,
    model: str | None = None,
    messages: Sequence[ChatMessage] = HI,
) -> list[Event]:
    _, stream = registry.generate(model, messages, params or GenerationParams())
    return [event async for event in stream.until_done()]


def texts(events: list[Event]) -> list[str]:
    return [e.text for e in events if isinstance(e, TextDelta)]


async def wait_for(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def test_events_in_order_until_eos() -> None:
    async def main() -> None:
        async with running(scripted(["Hel", "lo", " wor", "ld"])) as registry:
            events = await generate(registry)
        assert events == [
            Started(prompt_tokens=2),
            TextDelta("Hel"),
            TextDelta("lo"),
            TextDelta(" wor"),
            TextDelta("ld"),
            Finished("stop", prompt_tokens=2, completion_tokens=5),
        ]

    asyncio.run(main())


def test_max_tokens_finishes_with_length() -> None:
    async def main() -> None:
        async with running(scripted(["Hel", "lo", " wor", "ld"])) as registry:
            events = await generate(registry, GenerationParams(max_tokens=2))
        assert texts(events) == ["Hel", "lo"]
        assert events[-1] == Finished("length", 2, 2)

    asyncio.run(main())


def test_stop_string_spanning_tokens_is_never_sent() -> None:
    async def main() -> None:
        async with running(scripted(["Hel", "lo", " wor", "ld"])) as registry:
            events = await generate(registry, GenerationParams(stop=("xyz", "o w")))
        assert texts(events) == ["Hel", "l"]
        assert events[-1] == Finished("stop", 2, 3, stop_sequence="o w")

    asyncio.run(main())


def test_text_held_for_a_possible_stop_is_sent_at_eos() -> None:
    async def main() -> None:
        async with running(scripted(["ab", "c"])) as registry:
            events = await generate(registry, GenerationParams(stop=("cd",)))
        assert texts(events) == ["ab", "c"]
        assert events[-1] == Finished("stop", 2, 3)

    asyncio.run(main())


def test_concurrent_first_requests_cause_one_load() -> None:
    async def main() -> None:
        factory = scripted(["x", "y"])
        factory.load_gate = threading.Event()
        async with running(factory) as registry:
            tasks = [asyncio.create_task(generate(registry)) for _ in range(8)]
            await wait_for(lambda: registry.status(None).api_status == "reloading")
            factory.load_gate.set()
            results = await asyncio.gather(*tasks)
            assert registry.status(None).api_status == "loaded"
        assert factory.loads == ["org/a"]
        assert all(texts(events) == ["x", "y"] for events in results)

    asyncio.run(main())


def test_failed_load_fails_every_waiting_request_and_the_next_one_retries() -> None:
    async def main() -> None:
        factory = scripted(["ok"])
        factory.fail_with = RuntimeError("weights are corrupt")
        factory.load_gate = threading.Event()
        async with running(factory, (A, B)) as registry:
            tasks = [asyncio.create_task(generate(registry)) for _ in range(3)]
            await wait_for(lambda: registry.status(None).api_status == "reloading")
            factory.load_gate.set()
            for events in await asyncio.gather(*tasks):
                assert len(events) == 1 and isinstance(events[0], Failed)
                error = events[0].error
                assert isinstance(error, ModelLoadFailed)
                assert error.message == "loading model 'org/a' failed: RuntimeError: weights are corrupt"
            assert registry.status("org/a").api_status == "internal_error"
            assert registry.status("org/a").last_error == "RuntimeError: weights are corrupt"
            assert registry.status("org/b").api_status == "unloaded"
            factory.fail_with = None
            events = await generate(registry)
            assert texts(events) == ["ok"]
            assert registry.status("org/a").api_status == "loaded"
            assert registry.status("org/a").last_error is None
        assert factory.loads == ["org/a", "org/a"]

    asyncio.run(main())


def test_unload_lets_running_requests_finish_and_later_requests_reload() -> None:
    async def main() -> None:
        pieces = [f"t{i} " for i in range(30)]
        factory = Factory(lambda config: ScriptedEngine(pieces, step_delay=0.01))
        async with running(factory) as registry:
            _, first = registry.generate(None, HI, GenerationParams())
            assert isinstance(await first.get(), Started)
            unloading = asyncio.create_task(registry.unload(None))
            await asyncio.sleep(0.05)
            assert not unloading.done()  # waits for the running request
            second = asyncio.create_task(generate(registry))
            rest = [event async for event in first.until_done()]
            assert "".join(texts(rest)) == "".join(pieces)
            assert rest[-1] == Finished("stop", 2, 31)
            await unloading
            assert texts(await second) == pieces
            assert factory.loads == ["org/a", "org/a"]
            engine = factory.engines[0]
            assert isinstance(engine, ScriptedEngine) and engine.closed

    asyncio.run(main())


def test_every_model_can_be_unloaded_and_unload_is_idempotent() -> None:
    async def main() -> None:
        factory = scripted(["x"])
        async with running(factory, (A, B)) as registry:
            await registry.reload("org/a")
            await registry.reload("org/b")
            assert [registry.status(m).api_status for m in ("org/a", "org/b")] == ["loaded", "loaded"]
            for model in ("org/a", "org/b", "org/b"):
                await registry.unload(model)
            assert [registry.status(m).api_status for m in ("org/a", "org/b")] == ["unloaded", "unloaded"]
            assert all(isinstance(e, ScriptedEngine) and e.closed for e in factory.engines)
            await registry.reload("org/b")
            await registry.reload("org/b")  # already loaded: no second load
        assert factory.loads == ["org/a", "org/b", "org/b"]

    asyncio.run(main())


def test_cancelled_request_is_dropped_before_the_next_step_and_others_go_on() -> None:
    async def main() -> None:
        pieces = [f"{i}," for i in range(40)]
        factory = Factory(lambda config: ScriptedEngine(pieces, step_delay=0.005))
        async with running(factory) as registry:
            _, doomed = registry.generate(None, HI, GenerationParams())
            survivor = asyncio.create_task(generate(registry))
            assert isinstance(await doomed.get(), Started)
            assert isinstance(await doomed.get(), TextDelta)
            doomed.cancel()
            engine = factory.engines[0]
            assert isinstance(engine, ScriptedEngine)
            await wait_for(lambda: 1 in engine.released)
            assert engine.sequences.get(1) is None
            assert texts(await survivor) == pieces

    asyncio.run(main())


def test_a_crash_while_generating_fails_the_request_and_the_next_request_reloads() -> None:
    async def main() -> None:
        crash = [True]

        def make(config: ModelConfig) -> ScriptedEngine:
            return ScriptedEngine(["a", "b", "c"], fail_at_step=2 if crash[0] else 0)

        factory = Factory(make)
        async with running(factory) as registry:
            events = await generate(registry)
            assert isinstance(events[-1], Failed)
            assert isinstance(events[-1].error, InternalError)
            assert events[-1].error.message == "model 'org/a' failed: RuntimeError: the model crashed"
            assert registry.status(None).api_status == "internal_error"
            crash[0] = False
            assert texts(await generate(registry)) == ["a", "b", "c"]
            assert registry.status(None).api_status == "loaded"
        assert len(factory.loads) == 2

    asyncio.run(main())


def test_prompt_longer_than_the_context_is_a_400_and_the_model_keeps_serving() -> None:
    async def main() -> None:
        factory = Factory(lambda config: ScriptedEngine(["x"], context=4))
        async with running(factory) as registry:
            long = [ChatMessage("user", "one two three four")]
            events = await generate(registry, messages=long)
            assert len(events) == 1 and isinstance(events[0], Failed)
            error = events[0].error
            assert isinstance(error, ContextLengthExceeded) and error.param == "messages"
            assert error.code == "context_length_exceeded" and error.status == 400
            assert error.message == (
                "the prompt is 5 tokens; model 'org/a' holds 4 tokens in all, "
                "so shorten the messages by 2 or more"
            )
            assert texts(await generate(registry)) == ["x"]

    asyncio.run(main())


def test_max_tokens_is_clamped_to_the_room_left_in_the_context() -> None:
    async def main() -> None:
        factory = Factory(lambda config: ScriptedEngine(["a", "b", "c", "d"], context=4))
        async with running(factory) as registry:
            events = await generate(registry, GenerationParams(max_tokens=100))
        assert texts(events) == ["a", "b"]
        assert events[-1] == Finished("length", 2, 2)

    asyncio.run(main())


def test_preload_loads_in_the_background() -> None:
    async def main() -> None:
        factory = scripted(["x"])
        registry = ModelRegistry((A, B), "org/b", factory)
        registry.start(preload="default")
        try:
            await wait_for(lambda: registry.status("org/b").state is ModelState.LOADED)
            assert factory.loads == ["org/b"]
            assert registry.status("org/a").api_status == "unloaded"
        finally:
            await asyncio.to_thread(registry.shutdown, 10)

    asyncio.run(main())


def test_shutdown_fails_requests_still_in_flight() -> None:
    async def main() -> None:
        factory = Factory(lambda config: ScriptedEngine(["x"] * 500, step_delay=0.01))
        registry = ModelRegistry((A,), "org/a", factory)
        registry.start(preload="none")
        _, stream = registry.generate(None, HI, GenerationParams())
        assert isinstance(await stream.get(), Started)
        await asyncio.to_thread(registry.shutdown, 10)
        events = [event async for event in stream.until_done()]
        assert isinstance(events[-1], Failed) and isinstance(events[-1].error, Overloaded)
        assert registry.status(None).state is ModelState.UNLOADED

    asyncio.run(main())


def test_time_to_first_token_is_known_when_no_text_came_first() -> None:
    """A first token whose text is held back (a possible stop) still times the first token."""
    from llmserve.service.streams import RequestStats

    async def main() -> None:
        async with running(scripted(["o", " w"])) as registry:
            before = time.monotonic()
            events = await generate(registry, GenerationParams(stop=("o w",)))
        assert texts(events) == []
        finished = events[-1]
        assert finished == Finished("stop", 2, 2, stop_sequence="o w")
        assert isinstance(finished, Finished) and finished.first_token_at is not None
        assert before <= finished.first_token_at <= time.monotonic()
        stats = RequestStats()
        for event in events:
            stats.observe(event)
        assert stats.first_token_at == finished.first_token_at

    asyncio.run(main())
