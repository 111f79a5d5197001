"""Continuous batching, proven on a real (tiny) model and the real app: sequences share forward passes,
batched outputs equal solo outputs, sequences join and leave between steps, a cancelled request frees
its slot at once, and the 503 comes exactly when a model's batch and queue are full."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes import Factory, ScriptedEngine
from model_configs import plain
from servers import live_server
from tiny import build_model

from llmserve.engine.base import ChatMessage, GenerationParams
from llmserve.engine.hf import HFEngine
from llmserve.server import create_app

GREEDY = GenerationParams(temperature=0)
PROMPTS = ["hello there", "what is the capital of France", "numbers 1 2 3", "héllo wörld 🙂 again"]


@pytest.fixture(scope="module", params=[0.02, 0.3], ids=["smooth", "sharp"])
def engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HFEngine]:
    """Two tiny models: with smooth attention an unmasked padding column changes the tokens, with sharp
    attention a wrong position does."""
    directory = build_model(tmp_path_factory.mktemp("models") / "tiny", init_range=request.param)
    loaded = HFEngine.load(plain(directory, dtype="float32"))
    yield loaded
    loaded.close()


class ForwardCounter:
    def __init__(self, engine: HFEngine) -> None:
        self.calls = 0
        self._handle = engine.model.register_forward_hook(self._count)

    def _count(self, *_: Any) -> None:
        self.calls += 1

    def __enter__(self) -> ForwardCounter:
        return self

    def __exit__(self, *_: Any) -> None:
        self._handle.remove()


def prompt(engine: HFEngine, text: str) -> list[int]:
    return engine.encode_chat([ChatMessage("user", text)])


def alone(engine: HFEngine, ids: list[int], steps: int, params: GenerationParams = GREEDY) -> list[int]:
    seq = engine.start(ids, params)
    out = [engine.step([seq])[0] for _ in range(steps)]
    engine.release(seq)
    return out


def test_sequences_share_each_forward_pass_and_match_their_solo_outputs(engine: HFEngine) -> None:
    prompts = [prompt(engine, "x" * 6 + str(i)) for i in range(4)]  # equal lengths: one prompt pass
    assert len({len(p) for p in prompts}) == 1
    solo = [alone(engine, p, 12) for p in prompts]
    with ForwardCounter(engine) as forwards:
        seqs = [engine.start(p, GREEDY) for p in prompts]
        batched: list[list[int]] = [[] for _ in seqs]
        for _ in range(12):
            for out, token in zip(batched, engine.step(seqs), strict=True):
                out.append(token)
        for seq in seqs:
            engine.release(seq)
    assert forwards.calls == 1 + 11  # one prompt pass for all four, then one pass per step
    assert batched == solo


def test_sequences_join_and_leave_between_steps_with_their_own_seeds(engine: HFEngine) -> None:
    """Different prompt lengths, sampled and greedy rows, joins while others run, leaves in the middle."""
    params = [
        GREEDY,
        GenerationParams(temperature=0.9, seed=5),
        GREEDY,
        GenerationParams(temperature=1.3, seed=9),
    ]
    ids = [prompt(engine, text) for text in PROMPTS]
    lengths = [20, 6, 14, 9]
    solo = [alone(engine, p, n, q) for p, n, q in zip(ids, lengths, params, strict=True)]
    joins = [0, 2, 2, 5]  # the step at which each sequence starts
    out: dict[int, list[int]] = {}
    running: dict[int, int] = {}  # seq id -> index
    for step in range(30):
        for index, at in enumerate(joins):
            if at == step:
                running[engine.start(ids[index], params[index])] = index
        if not running:
            break
        seq_ids = list(running)
        for seq, token in zip(seq_ids, engine.step(seq_ids), strict=True):
            if token is None:  # a prompt read over several steps beside decoding rows (chunked prefill)
                continue
            out.setdefault(running[seq], []).append(token)
            if len(out[running[seq]]) == lengths[running[seq]]:
                engine.release(seq)
                del running[seq]
    assert [out[i] for i in range(4)] == solo


def test_the_cache_shrinks_when_the_longest_sequence_leaves(engine: HFEngine) -> None:
    long = engine.start(prompt(engine, "a long prompt " * 8), GREEDY)
    short = engine.start(prompt(engine, "hi"), GREEDY)
    engine.step([long, short])
    wide = engine._batch.width
    engine.release(long)
    engine.step([short])
    assert engine._batch.width == len(prompt(engine, "hi")) + 1 < wide
    engine.release(short)
    assert len(engine._batch) == 0 and engine._batch.width == 0


def test_step_needs_every_running_sequence(engine: HFEngine) -> None:
    first = engine.start(prompt(engine, "a"), GREEDY)
    second = engine.start(prompt(engine, "b"), GREEDY)
    with pytest.raises(ValueError, match="every started and unreleased sequence"):
        engine.step([first])
    engine.release(first)
    engine.release(second)


def test_a_sliding_window_model_steps_each_sequence_alone(tmp_path: Path) -> None:
    """A cache that cannot be left-padded (sliding-window layers) falls back to one pass per sequence."""
    from tiny import build_tokenizer
    from transformers import MistralConfig, MistralForCausalLM

    tokenizer = build_tokenizer()
    config = MistralConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        sliding_window=16,
        max_position_embeddings=256,
        eos_token_id=tokenizer.eos_token_id,
        initializer_range=0.3,
    )
    MistralForCausalLM(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    windowed = HFEngine.load(plain(tmp_path, dtype="float32"))
    ids = [prompt(windowed, text) for text in PROMPTS[:3]]
    solo = [alone(windowed, p, 8) for p in ids]
    with ForwardCounter(windowed) as forwards:
        seqs = [windowed.start(p, GREEDY) for p in ids]
        batched = [windowed.step(seqs) for _ in range(8)]
    assert forwards.calls == 3 * 8
    assert [list(column) for column in zip(*batched, strict=True)] == solo
    assert len(windowed._batch) == 0
    windowed.close()


# -- the app: backpressure and cancellation --

PIECES = [f"w{i} " for i in range(400)]


def slow_app(max_batch_size: int, max_queue: int) -> tuple[Any, Factory]:
    factory = Factory(lambda config: ScriptedEngine(PIECES, context=1024, step_delay=0.01))
    config = dataclasses.replace(
        plain(Path("scripted"), "m"), max_batch_size=max_batch_size, max_queue=max_queue
    )
    return create_app([config], "m", factory=factory, preload="all"), factory


def body(max_tokens: int = 300) -> dict[str, Any]:
    return {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": max_tokens,
        "stream": True,
    }


async def wait_for(condition: Any, what: str) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never true: {what}")


def test_503_exactly_when_batch_and_queue_are_full_and_a_cancelled_request_frees_its_slot() -> None:
    app, factory = slow_app(max_batch_size=2, max_queue=1)

    async def main(base: str) -> None:
        registry = app.state.registry
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:

            async def open_stream() -> httpx.Response:
                return await http.send(
                    http.build_request("POST", "/v1/chat/completions", json=body()), stream=True
                )

            # Two run, one waits (its response starts only once it runs).
            running = [await open_stream(), await open_stream()]
            waiting = asyncio.create_task(open_stream())
            await wait_for(lambda: registry.status("m").in_flight == 3, "three requests accepted")
            refused = await http.post("/v1/chat/completions", json=body())
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "1"
            assert refused.json() == {
                "error": {
                    "message": "model 'm' is at capacity (2 requests running, 1 waiting); retry shortly",
                    "type": "server_error",
                    "param": None,
                    "code": "overloaded",
                }
            }
            assert not waiting.done()
            await running[0].aclose()  # the client hangs up: its slot goes to the waiting request
            third = await asyncio.wait_for(waiting, 5)
            assert third.status_code == 200
            await wait_for(lambda: registry.status("m").in_flight == 2, "the cancelled request retired")
            assert (await http.post("/v1/chat/completions", json=body(3))).status_code == 200
            for stream in (running[1], third):
                text = "".join([line async for line in stream.aiter_lines()])
                assert text.count('"finish_reason":"length"') == 1 and text.endswith("data: [DONE]")
                await stream.aclose()
        engine = factory.engines[0]
        assert isinstance(engine, ScriptedEngine)
        assert len(engine.released) == 4 and registry.status("m").in_flight == 0

    with live_server(app) as base:
        asyncio.run(main(base))
