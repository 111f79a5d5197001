"""Admission by tokens on a real (tiny) model with a small KV cache budget: many long requests are all
answered, the token slots held never pass the budget (the engine's own counters), one that could never
fit is a 400 saying what it needs and what the model holds, and requests are served in arrival order."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from fakes import Factory
from tiny import build_model

from llmserve.config.entries import ModelConfig, PlainSpec
from llmserve.engine.base import ChatMessage, Engine, GenerationParams
from llmserve.engine.hf import HFEngine
from llmserve.errors import InvalidRequest
from llmserve.models.jobs import Event, EventStream, Failed, Finished, Generate, Started
from llmserve.models.kv_budget import KV_SHARE, KVBudget, KVLedger, derived_memory
from llmserve.models.registry import ModelRegistry

BUDGET_TOKENS = 200
LONG = "the capital of France is Paris and the capital of Italy is Rome " * 6


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model(tmp_path_factory.mktemp("models") / "tiny")


def config(directory: Path, tokens: int) -> ModelConfig:
    per_token = 2 * 2 * 2 * 16 * 4  # layers x (keys, values) x KV heads x head size x fp32
    return ModelConfig(
        "t",
        "tiny",
        PlainSpec(model_id=str(directory)),
        "float32",
        kv_cache_memory=tokens * per_token,
        prefill_chunk=64,
    )


def test_cost_is_rows_times_the_longest_when_padded() -> None:
    padded = KVBudget(tokens=300, bytes_per_token=10, padded=True, source="derived")
    assert padded.cost([100, 50]) == 200
    assert padded.fits([100, 50], 100) and not padded.fits([100, 50], 101)
    alone = KVBudget(tokens=300, bytes_per_token=10, padded=False, source="derived")
    assert alone.cost([100, 50]) == 150 and alone.fits([100, 50], 150)
    assert padded.bytes == 3000
    assert derived_memory(1000, None) == 800 and derived_memory(1000, 500) == 400
    assert derived_memory(None, None) is None and derived_memory(-5, None) == 0


async def _ask(registry: ModelRegistry, text: str, max_tokens: int | None) -> list[Event]:
    _, stream = registry.generate(None, [ChatMessage("user", text)], GenerationParams(max_tokens=max_tokens))
    return [event async for event in stream.until_done()]


def test_long_requests_wait_for_room_and_are_all_answered(directory: Path) -> None:
    factory = Factory(lambda c: HFEngine.load(c))

    async def main() -> Sequence[list[Event]]:
        registry = ModelRegistry([config(directory, BUDGET_TOKENS)], "tiny", factory)
        registry.start(preload="none")
        try:
            asks = [_ask(registry, f"{i} {LONG}", 8) for i in range(6)]
            asks += [_ask(registry, "hello", 8) for _ in range(4)]
            return await asyncio.gather(*asks)
        finally:
            await asyncio.to_thread(registry.shutdown, 10)

    answers = asyncio.run(main())
    assert all(isinstance(a[0], Started) and isinstance(a[-1], Finished) for a in answers)
    (engine,) = factory.engines
    assert isinstance(engine, HFEngine)
    longest = max(a[0].prompt_tokens for a in answers if isinstance(a[0], Started)) + 8
    assert 2 * longest > BUDGET_TOKENS  # so two long ones never ran together
    assert longest - 1 <= engine.kv_peak_tokens <= BUDGET_TOKENS  # the last token never enters the cache


def test_a_prompt_beyond_the_budget_is_a_400_and_no_max_tokens_is_clamped(directory: Path) -> None:
    factory = Factory(lambda c: HFEngine.load(c))

    async def main() -> tuple[list[Event], list[Event]]:
        registry = ModelRegistry([config(directory, 100)], "tiny", factory)
        registry.start(preload="none")
        try:
            return await _ask(registry, LONG, 8), await _ask(registry, "hello", None)
        finally:
            await asyncio.to_thread(registry.shutdown, 10)

    too_long, unbounded = asyncio.run(main())
    (failed,) = too_long
    assert isinstance(failed, Failed) and isinstance(failed.error, InvalidRequest)
    message = failed.error.message
    assert (
        message.startswith("the prompt is 1")
        and "model 'tiny' holds 100 tokens in its KV cache budget" in message
    )
    assert failed.error.param == "messages"
    started, finished = unbounded[0], unbounded[-1]
    assert isinstance(started, Started) and isinstance(finished, Finished)
    assert started.prompt_tokens + finished.completion_tokens <= 100
    engines: list[Engine] = factory.engines
    assert len(engines) == 1


def test_the_ledger_keeps_every_models_reservations_within_the_device() -> None:
    free = {"cpu": 1000}
    ledger = KVLedger(lambda device: free.get(device), lambda device: None)
    ledger.track("a", lambda: 0)
    ledger.track("b", lambda: 0)
    assert ledger.pool("cpu") == 800  # KV_SHARE of what is free
    assert ledger.try_reserve("a", "cpu", 500)
    assert not ledger.try_reserve("b", "cpu", 400)  # 900 > 800
    assert ledger.others_reserve("b", "cpu") and not ledger.others_reserve("a", "cpu")
    assert ledger.try_reserve("b", "cpu", 300)
    assert ledger.try_reserve("a", "cpu", 100)  # shrinking always fits
    assert ledger.reserved("cpu") == 400
    free["cpu"] = 0  # memory taken elsewhere: what the caches hold still counts as theirs
    ledger.track("a", lambda: 100)
    assert ledger.pool("cpu") == 80
    assert not ledger.try_reserve("a", "cpu", 200)
    ledger.forget("b")
    assert ledger.reserved() == 100
    budgeted = KVLedger(lambda device: 10_000, lambda device: 50)
    assert budgeted.pool("cpu") == 50  # --memory-budget after the weights


def test_two_models_on_one_device_share_what_it_has(directory: Path) -> None:
    """Each model alone may hold 300 tokens; the device has room for 300 tokens in all (KV_SHARE of
    free memory): the second model's long request waits until the first one's finishes."""
    per_token = 2 * 2 * 2 * 16 * 4
    factory = Factory(lambda c: HFEngine.load(c))
    one = dataclasses.replace(config(directory, 300), label="one", api_id="one")
    two = dataclasses.replace(config(directory, 300), label="two", api_id="two")
    free = int(300 * per_token / KV_SHARE) + 1  # before any cache: the caches take from it
    ledger = Recording(lambda device: free - ledger.held_bytes())

    async def main() -> list[list[Event]]:
        registry = ModelRegistry([one, two], "one", factory)
        registry.kv = ledger
        for worker in registry._workers.values():
            worker._admission.ledger = registry.kv
        registry.start(preload="none")
        try:
            await registry.reload("one")
            await registry.reload("two")
            asks = [_ask_model(registry, name, f"{name} {LONG}", 8) for name in ("one", "two", "one", "two")]
            answers = await asyncio.gather(*asks)
            assert registry.kv.reserved() == 0  # a request's reservation goes before its end is heard
            return answers
        finally:
            await asyncio.to_thread(registry.shutdown, 10)

    answers = asyncio.run(main())
    assert all(isinstance(a[-1], Finished) for a in answers)
    engines = [e for e in factory.engines if isinstance(e, HFEngine)]
    assert len(engines) == 2
    assert 150 * per_token <= ledger.most <= 300 * per_token  # never both long ones at once ...
    assert all(e.kv_peak_tokens >= 150 for e in engines)  # ... yet each ran its own


class Recording(KVLedger):
    """A ledger that remembers the most bytes reserved at once."""

    most = 0

    def held_bytes(self) -> int:
        return sum(held() for held in self._held.values())

    def try_reserve(self, unit_id: str, device: str, total: int) -> bool:
        taken = super().try_reserve(unit_id, device, total)
        self.most = max(self.most, self.reserved(device))
        return taken


async def _ask_model(registry: ModelRegistry, model: str, text: str, max_tokens: int) -> list[Event]:
    _, stream = registry.generate(model, [ChatMessage("user", text)], GenerationParams(max_tokens=max_tokens))
    return [event async for event in stream.until_done()]


def test_a_prompt_that_can_never_fit_is_refused_on_arrival_not_after_its_wait(directory: Path) -> None:
    factory = Factory(lambda c: HFEngine.load(c))
    done: dict[str, float] = {}

    async def timed(registry: ModelRegistry, name: str, text: str) -> list[Event]:
        events = await _ask(registry, text, 8)
        done[name] = time.monotonic()
        return events

    async def main() -> list[list[Event]]:
        registry = ModelRegistry([config(directory, BUDGET_TOKENS)], "tiny", factory)
        registry.start(preload="none")
        try:
            await registry.reload("tiny")
            return await asyncio.gather(
                timed(registry, "a", LONG),  # runs
                timed(registry, "b", f"b {LONG}"),  # waits for a: two do not fit
                timed(registry, "c", LONG * 2),  # can never fit
            )
        finally:
            await asyncio.to_thread(registry.shutdown, 10)

    a, b, c = asyncio.run(main())
    assert isinstance(a[-1], Finished) and isinstance(b[-1], Finished)
    (failed,) = c
    assert isinstance(failed, Failed) and "in its KV cache budget" in failed.error.message
    assert done["c"] < done["a"] < done["b"]


def test_the_memory_budget_counts_what_requests_reserve(directory: Path) -> None:
    from llmserve.config.sizes import parse_budget
    from llmserve.models.residency import Residency

    residency = Residency(budget=parse_budget("cpu=4GiB"))

    async def main() -> tuple[int, int, int | None]:
        registry = ModelRegistry(
            [config(directory, 300)], "tiny", Factory(lambda c: HFEngine.load(c)), residency
        )
        registry.start(preload="none")
        try:
            await registry.reload("tiny")
            weights = residency.used()["cpu"]
            assert registry.kv.try_reserve("tiny", "cpu", 5000)
            return weights, residency.used()["cpu"], residency.weights_left("cpu")
        finally:
            await asyncio.to_thread(registry.shutdown, 10)

    weights, with_request, left = asyncio.run(main())
    assert with_request == weights + 5000
    assert left == (4 << 30) - weights  # the KV ledger's share of the budget: after the weights only


def test_an_allocated_cache_is_admitted_against_its_cells_not_the_devices_free_memory() -> None:
    """llama.cpp allocates its cache at load: requests reserve cells of it, never the device's memory
    (which the cache already took), so a device with nothing free still admits them."""
    from llmserve.models.admission import Admission

    ledger = KVLedger(lambda device: 0, lambda device: None)
    admission = Admission("llama", ledger)
    admission.loaded(KVBudget(1000, 64, False, "derived", "cpu", allocated=True), lambda: 0)
    assert admission.reserve([400, 500])
    assert ledger.reserved() == 0 and ledger.pool("cpu") == 0
    kv = admission.kv
    assert kv is not None and kv.fits([400, 500], 100) and not kv.fits([400, 500], 101)


def test_room_given_back_between_the_two_checks_starts_the_request_not_a_503() -> None:
    """The race a CI run hit: the reservation fails while another model holds the device, that model's
    request ends before the "does anything else hold room?" check, and the request got a 503 although
    it now fits. It must try again when nothing else holds room, and start."""
    from llmserve.models.admission import Admission
    from llmserve.models.sequences import Prepared

    class LetsGo(KVLedger):
        """Another model holds the device until this model's first reservation has failed."""

        def try_reserve(self, unit_id: str, device: str, total: int) -> bool:
            taken = super().try_reserve(unit_id, device, total)
            if not taken and unit_id == "two":
                super().try_reserve("one", device, 0)  # "one" finished: its room comes back
            return taken

    ledger = LetsGo(lambda device: 1000 * 64, lambda device: None)
    admission = Admission("two", ledger)
    admission.loaded(KVBudget(1000, 64, False, "derived", "cpu"), lambda: 0)
    assert ledger.try_reserve("one", "cpu", 600 * 64)

    async def verdict() -> str:  # an event stream belongs to a running loop
        job = Generate((ChatMessage("user", "hi"),), GenerationParams(max_tokens=500), EventStream())
        return admission.verdict([], Prepared(job, [1] * 100, 500))

    assert asyncio.run(verdict()) == "start"
    assert ledger.reserved("cpu") == 600 * 64
