"""service/streams: starting several generations, collecting one, merging their events, and the stats
the access log reports. Scripted engines behind a real registry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from fakes import Factory, ScriptedEngine, scripted

from llmserve.config.entries import ModelConfig, PlainSpec
from llmserve.engine.base import ChatMessage, GenerationParams
from llmserve.errors import ModelLoadFailed, ModelNotFound
from llmserve.models.jobs import Failed, Finished, TextDelta
from llmserve.models.registry import ModelRegistry
from llmserve.service.streams import RequestStats, collect, merged, seeded, start_streams

A = ModelConfig("a", "org/a", PlainSpec(model_id="org/a"))
HI = [ChatMessage("user", "hi there")]


@asynccontextmanager
async def running(factory: Factory) -> AsyncIterator[ModelRegistry]:
    registry = ModelRegistry([A], "org/a", factory)
    registry.start(preload="none")
    try:
        yield registry
    finally:
        await asyncio.to_thread(registry.shutdown, 10)


def test_seeded_gives_each_choice_its_own_seed() -> None:
    params = GenerationParams(seed=10)
    assert [seeded(params, i).seed for i in range(3)] == [10, 11, 12]
    assert seeded(GenerationParams(), 2).seed is None


def test_start_collect_and_stats() -> None:
    async def main() -> None:
        async with running(scripted(["a", "b"])) as registry:
            model, streams, started = await start_streams(
                2, lambda i: registry.generate(None, HI, seeded(GenerationParams(seed=1), i))
            )
            assert model == "org/a"
            assert [s.prompt_tokens for s in started] == [3, 3]
            stats = RequestStats()
            results = [await collect(stream, stats) for stream in streams]
        assert [(text, entries) for text, entries, _ in results] == [("ab", []), ("ab", [])]
        assert [finished.reason for _, _, finished in results] == ["stop", "stop"]
        assert stats.completion_tokens == 3  # the last Finished seen (each choice: two pieces and EOS)
        assert stats.first_token_at is not None

    asyncio.run(main())


def test_a_failed_start_cancels_every_stream_and_raises() -> None:
    async def main() -> None:
        factory = scripted(["a"])
        factory.fail_with = RuntimeError("no weights")
        async with running(factory) as registry:
            submitted = []

            def submit(i: int) -> tuple[str, object]:
                unit, stream = registry.generate(None, HI, GenerationParams())
                submitted.append(stream)
                return unit, stream

            with pytest.raises(ModelLoadFailed):
                await start_streams(2, submit)  # type: ignore[arg-type]
            assert len(submitted) == 2
            assert all(s.cancelled for s in submitted)

    asyncio.run(main())


def test_an_unknown_model_is_raised_before_anything_is_queued() -> None:
    async def main() -> None:
        async with running(scripted(["a"])) as registry:
            with pytest.raises(ModelNotFound):
                await start_streams(1, lambda i: registry.generate("nope", HI, GenerationParams()))

    asyncio.run(main())


def test_merged_tags_each_event_with_its_choice_and_ends_after_all() -> None:
    async def main() -> None:
        factory = Factory(lambda config: ScriptedEngine(["x", "y"], step_delay=0.001))
        async with running(factory) as registry:
            _, streams, _ = await start_streams(3, lambda i: registry.generate(None, HI, GenerationParams()))
            events = [(i, e) async for i, e in merged(streams)]
        for choice in range(3):
            mine = [e for i, e in events if i == choice]
            assert [type(e) for e in mine] == [TextDelta, TextDelta, Finished]
            assert "".join(e.text for e in mine if isinstance(e, TextDelta)) == "xy"
        assert not any(isinstance(e, Failed) for _, e in events)

    asyncio.run(main())
