"""Chunked prefill and the KV counters on a real (tiny) model: a long prompt is read a chunk per step
while the running sequences keep decoding, answers exactly what a one-pass prefill answers, and the
engine's counters see every token slot its caches hold."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tiny import build_model

from llmserve.config.entries import ModelConfig, PlainSpec
from llmserve.engine.base import ChatMessage, GenerationParams, KVCacheSource
from llmserve.engine.hf import HFEngine
from llmserve.engine.kvcache import kv_bytes_per_token

GREEDY = GenerationParams(temperature=0)
LONG = "the capital of France is Paris and the capital of Italy is Rome " * 6


def config(directory: Path, chunk: int) -> ModelConfig:
    return ModelConfig(
        "t", str(directory), PlainSpec(model_id=str(directory)), "float32", prefill_chunk=chunk
    )


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model(tmp_path_factory.mktemp("models") / "tiny", init_range=0.3)


@pytest.fixture(scope="module")
def chunked(directory: Path) -> Iterator[HFEngine]:
    engine = HFEngine.load(config(directory, 16))
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def whole(directory: Path) -> Iterator[HFEngine]:
    engine = HFEngine.load(config(directory, 4096))
    yield engine
    engine.close()


def ids(engine: HFEngine, text: str) -> list[int]:
    return engine.encode_chat([ChatMessage("user", text)])


def run_alone(engine: HFEngine, prompt: list[int], tokens: int) -> list[int | None]:
    seq = engine.start(prompt, GREEDY)
    out: list[int | None] = []
    while len([t for t in out if t is not None]) < tokens:
        out.append(engine.step([seq])[0])
    engine.release(seq)
    return out


def test_a_long_prompt_is_read_a_chunk_per_step_and_answers_the_same(
    chunked: HFEngine, whole: HFEngine
) -> None:
    prompt = ids(chunked, LONG)
    assert len(prompt) > 100
    steps = run_alone(chunked, prompt, 8)
    chunks = -(-len(prompt) // 16)
    assert steps[: chunks - 1] == [None] * (chunks - 1)  # no token until the last chunk is read
    assert None not in steps[chunks - 1 :]
    assert [t for t in steps if t is not None] == run_alone(whole, prompt, 8)


def test_running_sequences_get_a_token_every_step_while_a_long_prompt_is_read(chunked: HFEngine) -> None:
    short = chunked.start(ids(chunked, "hello"), GREEDY)
    chunked.step([short])  # the short one is decoding
    long = chunked.start(ids(chunked, LONG), GREEDY)
    reading = 0
    for _ in range(5):
        short_token, long_token = chunked.step([short, long])
        assert short_token is not None
        reading += long_token is None
    assert reading >= 4
    chunked.release(short)
    chunked.release(long)


def test_the_counters_see_the_batch_and_the_caches_being_filled(chunked: HFEngine, whole: HFEngine) -> None:
    assert isinstance(whole, KVCacheSource)
    model_config = whole.model.config
    assert whole.kv_bytes_per_token == 2 * model_config.num_hidden_layers * 2 * (64 // 4) * 4  # fp32
    assert kv_bytes_per_token(model_config, whole.model.dtype) == whole.kv_bytes_per_token
    a, b = ids(whole, "hello"), ids(whole, "numbers 1 2 3 4 5 6 7 8")
    sa = whole.start(a, GREEDY)
    sb = whole.start(b, GREEDY)
    whole.step([sa, sb])  # both prefilled and joined: rows x the longest row
    assert whole.kv_tokens_held == 2 * max(len(a), len(b))
    whole.step([sa, sb])
    assert whole.kv_tokens_held == 2 * (max(len(a), len(b)) + 1)
    assert whole.kv_peak_tokens >= whole.kv_tokens_held
    whole.release(sa)
    whole.release(sb)
    assert whole.kv_tokens_held == 0

    prompt = ids(chunked, LONG)
    long = chunked.start(prompt, GREEDY)
    for _ in range(3):  # a prompt being read holds room for all of it from its first chunk (written in place)
        assert chunked.step([long]) == [None]
        assert chunked.kv_tokens_held == len(prompt)
    chunked.release(long)
    assert chunked.kv_tokens_held == 0
