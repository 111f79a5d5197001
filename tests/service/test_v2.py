"""service/v2: the V2 service over a real registry with scripted engines: metadata, the repository
(index, load, unload, run-time registration) and text generation whole and streamed."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from fakes import Factory, ScriptedEngine, scripted

from llmserve.config.entries import ModelConfig, PlainSpec
from llmserve.config.runtime import RuntimeModels
from llmserve.errors import Forbidden, InvalidRequest, ModelNotFound
from llmserve.models.registry import ModelRegistry
from llmserve.models.status import ModelState
from llmserve.protocol.v2 import LoadRequest, TextParameters, TextRequest
from llmserve.service.streams import RequestStats
from llmserve.service.v2 import V2Service, generation_params

A = ModelConfig("a", "org/a", PlainSpec(model_id="org/a"))
V1 = dataclasses.replace(A, label="v1", api_id="v", version="1", default_version=True)
V2 = dataclasses.replace(A, label="v2", api_id="v", version="2")
HI = TextRequest("hi", TextParameters(max_tokens=8, given=frozenset({"max_tokens"})))


def run(
    body: Callable[[V2Service], Awaitable[None]],
    factory: Factory | None = None,
    runtime: RuntimeModels | None = None,
) -> None:
    @asynccontextmanager
    async def service() -> AsyncIterator[V2Service]:
        registry = ModelRegistry([A, V1, V2], "org/a", factory or scripted(["o", "k"]))
        registry.start(preload="none")
        try:
            yield V2Service(registry, runtime or RuntimeModels())
        finally:
            await asyncio.to_thread(registry.shutdown, 10)

    async def main() -> None:
        async with service() as v2:
            await body(v2)

    asyncio.run(main())


def test_generation_params_default_what_the_request_left_out() -> None:
    params = generation_params(TextParameters(temperature=0.0, given=frozenset({"temperature"})))
    assert params.temperature == 0.0
    assert params.omitted == frozenset({"max_tokens", "top_p", "top_k", "min_p", "repetition_penalty"})


def test_metadata_lists_versions_and_one_version_alone() -> None:
    async def body(v2: V2Service) -> None:
        tensors: dict[str, Any] = {
            "platform": "llmserve_transformers",
            "inputs": [{"name": "text_input", "datatype": "BYTES", "shape": [1]}],
            "outputs": [{"name": "text_output", "datatype": "BYTES", "shape": [1]}],
        }
        assert v2.metadata("v") == {"name": "v", "versions": ["1", "2"], **tensors}
        assert v2.metadata("v", "2") == {"name": "v", "versions": ["2"], **tensors}
        with pytest.raises(ModelNotFound):
            v2.metadata("v", "3")
        assert v2.ready()

    run(body)


def test_index_load_and_unload() -> None:
    async def body(v2: V2Service) -> None:
        unavailable = {"state": "UNAVAILABLE", "reason": "unloaded"}
        assert v2.index(only_ready=False) == [
            {"name": "org/a", "version": "1", **unavailable},
            {"name": "v", "version": "1", **unavailable},
            {"name": "v", "version": "2", **unavailable},
        ]
        await v2.load("v", LoadRequest())
        assert v2.index(only_ready=True) == [{"name": "v", "version": "1", "state": "READY", "reason": ""}]
        await v2.load("v", LoadRequest())  # a loaded model loads anew
        assert v2.model("v").state is ModelState.LOADED
        await v2.unload("v")
        assert v2.index(only_ready=True) == []

    factory = scripted(["x"])
    run(body, factory)
    assert factory.loads == ["v@1", "v@1"]


def test_a_failed_load_is_a_400_with_the_reason() -> None:
    async def body(v2: V2Service) -> None:
        with pytest.raises(InvalidRequest) as caught:
            await v2.load("org/a", LoadRequest())
        assert caught.value.message.startswith("failed to load 'org/a': ")
        assert "no weights" in caught.value.message
        (entry,) = [e for e in v2.index(False) if e["name"] == "org/a"]
        assert entry["state"] == "UNAVAILABLE" and "no weights" in entry["reason"]

    factory = scripted(["x"])
    factory.fail_with = RuntimeError("no weights")
    run(body, factory)


def test_registering_at_run_time_needs_the_flag() -> None:
    entry = {"Plain": {"model_id": "org/new"}}

    async def refused(v2: V2Service) -> None:
        with pytest.raises(Forbidden):
            await v2.load("new", LoadRequest(registers=True, config=entry))
        with pytest.raises(ModelNotFound):
            v2.model("new")

    run(refused)

    async def allowed(v2: V2Service) -> None:
        await v2.load("new", LoadRequest(registers=True, config=entry))
        assert v2.model("new").state is ModelState.LOADED
        with pytest.raises(InvalidRequest):
            await v2.load("new", LoadRequest(registers=True, config=None))

    run(allowed, runtime=RuntimeModels(allowed=True))


def test_generate_and_infer_answer_the_text() -> None:
    async def body(v2: V2Service) -> None:
        stats = RequestStats()
        assert await v2.generate(v2.model("v", "2"), HI, stats) == "ok"
        assert (stats.model, stats.prompt_tokens, stats.completion_tokens) == ("v@2", 2, 3)
        answer = await v2.infer(v2.model("org/a"), dataclasses.replace(HI, id="r7"), RequestStats())
        assert answer == {
            "model_name": "org/a",
            "model_version": "1",
            "id": "r7",
            "outputs": [{"name": "text_output", "datatype": "BYTES", "shape": [1], "data": ["ok"]}],
        }

    run(body)


def test_the_stream_sends_each_piece_then_the_end() -> None:
    async def body(v2: V2Service) -> None:
        pieces = await v2.open_stream(v2.model("v"), HI, RequestStats())
        names = {"model_name": "v", "model_version": "1"}
        assert [p async for p in pieces] == [
            {**names, "text_output": "o"},
            {**names, "text_output": "k"},
            {**names, "text_output": "", "finish_reason": "stop"},
        ]

    run(body)


def test_a_failure_after_the_start_is_an_error_piece() -> None:
    async def body(v2: V2Service) -> None:
        pieces = await v2.open_stream(v2.model("org/a"), HI, RequestStats())
        got = [p async for p in pieces]
        assert got[0] == {"model_name": "org/a", "model_version": "1", "text_output": "o"}
        assert list(got[-1]) == ["error"] and "crashed" in got[-1]["error"]

    run(body, Factory(lambda config: ScriptedEngine(["o", "k", "!"], fail_at_step=2)))
