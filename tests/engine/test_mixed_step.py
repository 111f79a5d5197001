"""Mixed steps and grouped attention on a real (tiny, grouped-query) model: the decoding rows and a prompt
chunk read in one forward pass give every sequence the tokens it gets alone, and `llmserve_sdpa` computes
what transformers' SDPA computes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from tiny import build_model
from transformers import AutoModelForCausalLM

from llmserve.config.entries import ModelConfig, PlainSpec
from llmserve.engine.attention import NAME
from llmserve.engine.base import ChatMessage, GenerationParams
from llmserve.engine.hf import HFEngine
from llmserve.errors import InvalidRequest

GREEDY = GenerationParams(temperature=0, ignore_eos=True)
LONG = "the capital of France is Paris and the capital of Italy is Rome " * 6


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model(tmp_path_factory.mktemp("models") / "tiny", init_range=0.3)


@pytest.fixture(scope="module")
def engine(directory: Path) -> Iterator[HFEngine]:
    config = ModelConfig("t", str(directory), PlainSpec(model_id=str(directory)), "float32", prefill_chunk=16)
    loaded = HFEngine.load(config)
    yield loaded
    loaded.close()


def ids(engine: HFEngine, text: str) -> list[int]:
    return engine.encode_chat([ChatMessage("user", text)])


def alone(engine: HFEngine, prompt: list[int], tokens: int) -> list[int]:
    seq = engine.start(prompt, GREEDY)
    out: list[int] = []
    while len(out) < tokens:
        token = engine.step([seq])[0]
        if token is not None:
            out.append(token)
    engine.release(seq)
    return out


def test_rows_and_a_prompt_chunk_in_one_pass_answer_what_each_answers_alone(engine: HFEngine) -> None:
    prompts = {
        "a": ids(engine, "hello"),
        "b": ids(engine, "numbers 1 2 3 4 5 6 7 8"),
        "long": ids(engine, LONG),
    }
    assert len(prompts["long"]) > 100 and len(prompts["a"]) != len(prompts["b"])  # padded rows
    wanted = {name: alone(engine, prompt, 12) for name, prompt in prompts.items()}
    before = engine.mixed_steps

    seqs = {name: engine.start(prompts[name], GREEDY) for name in ("a", "b")}
    got: dict[str, list[int]] = {"a": [], "b": [], "long": []}
    while not (got["a"] and got["b"]):  # until a and b both decode
        for name, token in zip(seqs, engine.step(list(seqs.values())), strict=True):
            if token is not None:
                got[name].append(token)
    seqs["long"] = engine.start(prompts["long"], GREEDY)
    reading = 0
    while len(got["long"]) < 12:
        tokens = engine.step(list(seqs.values()))
        for name, token in zip(seqs, tokens, strict=True):
            if token is not None and len(got[name]) < 12:
                got[name].append(token)
        reading += tokens[-1] is None
    for seq in seqs.values():
        engine.release(seq)

    assert reading >= 5  # the long prompt took several steps, each beside the decoding rows
    assert engine.mixed_steps - before >= reading
    assert got == wanted


def test_grouped_attention_computes_what_transformers_sdpa_computes(directory: Path) -> None:
    reference = AutoModelForCausalLM.from_pretrained(
        directory, dtype=torch.float32, attn_implementation="sdpa"
    )
    grouped = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, attn_implementation="sdpa")
    grouped.set_attn_implementation(NAME)
    assert reference.config.num_key_value_heads < reference.config.num_attention_heads
    input_ids = torch.randint(5, 60, (2, 12))
    mask = torch.ones_like(input_ids)
    mask[1, :5] = 0  # a left-padded row: transformers passes a mask, and would repeat the keys
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    with torch.inference_mode():
        want = reference(input_ids=input_ids, attention_mask=mask, position_ids=positions).logits
        got = grouped(input_ids=input_ids, attention_mask=mask, position_ids=positions).logits
    torch.testing.assert_close(got[0], want[0])
    torch.testing.assert_close(got[1, 5:], want[1, 5:])


def test_a_model_on_another_attention_function_reads_chunks_alone(directory: Path) -> None:
    # mixed steps need llmserve's attention function, which serves the plan (set on the CPU only)
    from transformers import AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, attn_implementation="eager")
    engine = HFEngine(model, AutoTokenizer.from_pretrained(directory), torch.device("cpu"), prefill_chunk=16)
    assert not engine.mixing
    wanted = alone(engine, ids(engine, LONG), 4)
    first = engine.start(ids(engine, "hello"), GREEDY)
    engine.step([first])
    long = engine.start(ids(engine, LONG), GREEDY)
    got: list[int] = []
    while len(got) < 4:
        token = engine.step([first, long])[1]
        if token is not None:
            got.append(token)
    assert got == wanted and engine.mixed_steps == 0


def test_an_empty_prompt_is_refused(engine: HFEngine) -> None:
    # a mixed step would otherwise answer it with the logits of another sequence's row
    with pytest.raises(InvalidRequest, match="the prompt is empty"):
        engine.start([], GREEDY)
