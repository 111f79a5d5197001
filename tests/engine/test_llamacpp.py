"""The llama.cpp engine on SmolLM2's GGUF file, against llama-cpp-python's own generation: greedy tokens,
batched rows against solo rows, sequences joining and leaving mid-batch, constrained decoding, log
probabilities, and memory returned on close. llama.cpp loads the file in a fraction of a second, so the
engine is built once per module."""

from __future__ import annotations

import gc
import json
import math
from collections.abc import Iterator

import jsonschema
import numpy as np
import psutil
import pytest
from smollm2_gguf import smollm2_entry, smollm2_file

from llmserve.engine.base import ChatMessage, Constraint, GenerationParams
from llmserve.engine.grammar import compiled

pytestmark = pytest.mark.slow
llama_cpp = pytest.importorskip("llama_cpp")
GREEDY = GenerationParams(temperature=0.0)


@pytest.fixture(scope="module")
def engine() -> Iterator[object]:
    from llmserve.engine.llamacpp import LlamaCppEngine

    loaded = LlamaCppEngine.load(smollm2_entry(max_batch_size=8, context_length=1024))
    yield loaded
    loaded.close()


def run(
    engine: object, prompts: list[list[int]], tokens: int, params: GenerationParams = GREEDY
) -> list[list[int]]:
    """Each prompt's first `tokens` tokens, all sequences stepped together."""
    from llmserve.engine.llamacpp import LlamaCppEngine

    assert isinstance(engine, LlamaCppEngine)
    ids = [engine.start(p, params) for p in prompts]
    out: list[list[int]] = [[] for _ in prompts]
    while any(len(o) < tokens for o in out):
        for row, token in enumerate(engine.step(ids)):
            if token is not None and len(out[row]) < tokens:
                out[row].append(token)
    for seq_id in ids:
        engine.release(seq_id)
    return out


def prompt(engine: object, text: str) -> list[int]:
    from llmserve.engine.llamacpp import LlamaCppEngine

    assert isinstance(engine, LlamaCppEngine)
    return engine.encode_chat([ChatMessage("user", text)])


def test_greedy_tokens_equal_llama_cpp_pythons_own(engine: object) -> None:
    ids = prompt(engine, "Write a story about a dragon who bakes bread.")
    llm = llama_cpp.Llama(str(smollm2_file()), n_ctx=1024, n_threads=2, verbose=False)
    expected: list[int] = []
    for token in llm.generate(ids, temp=0.0, top_k=1, repeat_penalty=1.0):
        expected.append(token)
        if len(expected) == 32:
            break
    del llm
    assert run(engine, [ids], 32) == [expected]


def test_batched_rows_equal_solo_rows(engine: object) -> None:
    prompts = [prompt(engine, f"Tell me about the number {n}.") for n in (3, 17, 256, 9001)]
    solo = [run(engine, [p], 20)[0] for p in prompts]
    assert run(engine, prompts, 20) == solo


def test_sequences_join_and_leave_mid_batch(engine: object) -> None:
    from llmserve.engine.llamacpp import LlamaCppEngine

    assert isinstance(engine, LlamaCppEngine)
    first, second = prompt(engine, "Name three fruits."), prompt(engine, "Name three colours.")
    alone = run(engine, [second], 16)[0]
    a = engine.start(first, GREEDY)
    for _ in range(5):
        engine.step([a])
    b = engine.start(second, GREEDY)
    got: list[int] = []
    steps = 0
    while len(got) < 16:  # b's prompt is read a chunk at a time beside a's decoding
        if steps == 6:
            engine.release(a)  # leaves mid-batch: its cells are freed, b goes on
        tokens = engine.step([a, b] if steps < 6 else [b])
        if tokens[-1] is not None:
            got.append(tokens[-1])
        steps += 1
    engine.release(b)
    assert got == alone
    assert engine.kv_tokens_held == 0


def test_json_schema_answers_validate(engine: object) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    params = GenerationParams(temperature=0.8, seed=7, constraint=compiled(Constraint.json_schema(schema)))
    from llmserve.engine.llamacpp import LlamaCppEngine

    assert isinstance(engine, LlamaCppEngine)
    seq = engine.start(prompt(engine, "Describe a person as JSON."), params)
    out: list[int] = []
    while not out or not engine.is_eos(out[-1]):
        token = engine.step([seq])[0]
        if token is not None:
            out.append(token)
        assert len(out) < 80
    engine.release(seq)
    jsonschema.validate(json.loads(engine.decode(out)), schema)


def test_logprobs_are_the_log_softmax_of_llama_cpps_logits(engine: object) -> None:
    from llmserve.engine.llamacpp import LlamaCppEngine

    assert isinstance(engine, LlamaCppEngine)
    ids = prompt(engine, "What is the capital of France?")
    seq = engine.start(ids, GenerationParams(temperature=0.0, logprobs=3))
    token = engine.step([seq])[0]
    found = engine.take_logprobs(seq)
    engine.release(seq)
    # the raw logits of the prompt's last token from a context of its own (llama-cpp-python's Llama
    # builds its context without flash attention, whose sums differ in the third decimal)
    from llmserve.engine.llamacpp_lib import Context, Model, Row

    model = Model(smollm2_file())
    context = Context(model, cells=1024, slots=1, shared=False, batch=1024, threads=2)
    rows = [Row(t, p, 0, p == len(ids) - 1) for p, t in enumerate(ids)]
    logits = context.decode(rows)[0].astype(np.float64)
    context.close()
    model.close()
    expected = logits - (logits.max() + math.log(np.exp(logits - logits.max()).sum()))
    assert found is not None and found.token_id == token == int(np.argmax(logits))
    assert found.logprob == pytest.approx(expected[token], abs=1e-3)
    top = [int(i) for i in np.argsort(-expected)[:3]]
    assert [t for t, _ in found.top] == top
    assert [v for _, v in found.top] == pytest.approx([expected[t] for t in top], abs=1e-3)


def test_close_returns_the_memory() -> None:
    from llmserve.engine.llamacpp import LlamaCppEngine
    from llmserve.engine.memory import trim_process_memory

    process = psutil.Process()
    gc.collect()
    trim_process_memory()
    before = process.memory_info().rss
    loaded = LlamaCppEngine.load(smollm2_entry(max_batch_size=4, kv_cache_memory=256 << 20))
    run(loaded, [prompt(loaded, "Hello!")], 8)
    held = process.memory_info().rss - before
    assert held > 200 << 20  # the cache is allocated (and cleared) whole
    loaded.close()
    del loaded
    gc.collect()
    trim_process_memory()
    assert process.memory_info().rss - before < 40 << 20


def test_lanes_hold_what_they_reserve_and_decode_as_one_context() -> None:
    """A shared cache of 1,024 cells for sequences of up to 256 tokens is four contexts ("lanes") of 256:
    a sequence goes where its reservation (prompt + max_tokens) fits, `kv_room` says whether one more
    would, and rows in different lanes decode exactly as each alone."""
    from llmserve.engine.llamacpp import LlamaCppEngine

    per_token = 30 * 3 * 2 * 64 * 2  # SmolLM2: layers x KV heads x (K, V) x head size x f16
    entry = smollm2_entry(max_batch_size=8, context_length=256, kv_cache_memory=1024 * per_token)
    loaded = LlamaCppEngine.load(entry)
    try:
        assert (loaded.kv_cells, loaded.context_length) == (1024, 256)
        prompts = [prompt(loaded, f"Tell me about the number {n}.") for n in (3, 17, 256, 9001)]
        solo = [run(loaded, [p], 12)[0] for p in prompts]
        assert loaded.kv_room(256)
        long = [GenerationParams(temperature=0.0, max_tokens=200 - len(p)) for p in prompts]  # 200 cells
        ids = [loaded.start(p, params) for p, params in zip(prompts, long, strict=True)]
        assert not loaded.kv_room(57)  # each lane has 56 cells left: one sequence per lane
        assert loaded.kv_room(56)
        out: list[list[int]] = [[] for _ in prompts]
        while any(len(o) < 12 for o in out):
            for row, token in enumerate(loaded.step(ids)):
                if token is not None and len(out[row]) < 12:
                    out[row].append(token)
        assert out == solo
        loaded.release(ids[0])
        assert loaded.kv_room(256)
        for seq_id in ids[1:]:
            loaded.release(seq_id)
        assert loaded.kv_tokens_held == 0
    finally:
        loaded.close()


def test_prompts_alike_fill_the_lanes_evenly() -> None:
    """Sharing a prefix does not pile sequences into one lane: 40 chats with one system prompt fill the
    first lane to `LANE_FILL` (16), then the second, then both in turn (20 and 20: a step's attention
    reads rows x their lane's cells), and each takes the common prefix from a sequence of its lane."""
    from llmserve.engine.llamacpp import LlamaCppEngine
    from llmserve.engine.llamacpp_lanes import LANE_FILL

    per_token = 30 * 3 * 2 * 64 * 2
    entry = smollm2_entry(max_batch_size=40, context_length=1024, kv_cache_memory=2048 * per_token)
    loaded = LlamaCppEngine.load(entry)
    try:
        assert isinstance(loaded, LlamaCppEngine)
        lanes = loaded._lanes.lanes
        assert len(lanes) == 2 and LANE_FILL == 16
        few = GenerationParams(temperature=0.0, max_tokens=4)
        prompts = [loaded.encode_chat([SYSTEM, ChatMessage("user", f"Count to {n}.")]) for n in range(40)]
        ids = []
        for n, prompt_ids in enumerate(prompts):
            ids.append(loaded.start(prompt_ids, few))
            counts = [lane.sequences for lane in lanes]
            if n < 16:
                assert counts == [n + 1, 0]
            elif n < 32:
                assert counts == [16, n - 15]
            else:
                assert abs(counts[0] - counts[1]) <= 1
        assert [lane.sequences for lane in lanes] == [20, 20]
        seqs = [loaded._seqs[seq_id] for seq_id in ids]
        donors = [seq.donor for seq in seqs]
        assert donors.count(None) == 2  # the first of each lane
        common = common_length(prompts[0], prompts[1])
        for seq in seqs:
            if seq.donor is not None:
                assert loaded._seqs[seq.donor].lane == seq.lane
                assert seq.shared >= common  # "Count to 1" and "Count to 12" share one more
        for seq_id in ids:
            loaded.release(seq_id)
    finally:
        loaded.close()


def common_length(a: list[int], b: list[int]) -> int:
    return next(i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y)


@pytest.fixture(scope="module")
def pooled() -> Iterator[object]:
    """A cache shared by the sequences (1,024 cells for up to 8 of 512 tokens; two lanes of 512)."""
    from llmserve.engine.llamacpp import LlamaCppEngine

    per_token = 30 * 3 * 2 * 64 * 2
    loaded = LlamaCppEngine.load(
        smollm2_entry(max_batch_size=8, context_length=512, kv_cache_memory=1024 * per_token)
    )
    yield loaded
    loaded.close()


SYSTEM = ChatMessage("system", "You are a terse assistant who answers every question in one line.")
SHORT = GenerationParams(temperature=0.0, max_tokens=20)  # several fit one lane


def alone(engine: object, prompt_ids: list[int], tokens: int) -> list[int]:
    """The tokens `prompt_ids` gets with nothing to share: every kept sequence dropped first and after."""
    from llmserve.engine.llamacpp import LlamaCppEngine

    assert isinstance(engine, LlamaCppEngine)
    engine.drop_kept()
    out = run(engine, [prompt_ids], tokens, SHORT)[0]
    engine.drop_kept()
    return out


def test_a_common_prefix_is_taken_from_a_running_sequence_once_written(pooled: object) -> None:
    """Chats with the same system prompt arriving together: the second and third take the first's cells
    for the tokens in common (waiting for them to be written), and answer exactly as each alone."""
    from llmserve.engine.llamacpp import LlamaCppEngine

    assert isinstance(pooled, LlamaCppEngine)
    prompts = [
        pooled.encode_chat([SYSTEM, ChatMessage("user", text)])
        for text in ("Name three fruits.", "Name three colours.", "Name three rivers.")
    ]
    common = next(i for i, (a, b) in enumerate(zip(prompts[0], prompts[1], strict=False)) if a != b)
    assert common >= 16
    solo = [alone(pooled, p, 12) for p in prompts]
    shared = pooled.prompt_tokens_shared
    assert run(pooled, prompts, 12, SHORT) == solo
    assert pooled.prompt_tokens_shared - shared == 2 * common
    assert pooled.kv_tokens_held == 0
    assert pooled.kept_tokens > 0  # their cells stay for the next prompt that begins alike


def test_the_next_turn_of_a_conversation_takes_the_kept_cells_of_the_last(pooled: object) -> None:
    from llmserve.engine.llamacpp import LlamaCppEngine

    assert isinstance(pooled, LlamaCppEngine)
    first = [SYSTEM, ChatMessage("user", "Name three fruits.")]
    turn1 = pooled.encode_chat(first)
    answer = pooled.decode(alone(pooled, turn1, 12))
    turn2 = pooled.encode_chat([*first, ChatMessage("assistant", answer), ChatMessage("user", "And a tree?")])
    expected = alone(pooled, turn2, 12)
    run(pooled, [turn1], 12, SHORT)  # the first turn again: its cells are kept
    shared = pooled.prompt_tokens_shared
    assert run(pooled, [turn2], 12, SHORT) == [expected]
    assert pooled.prompt_tokens_shared - shared >= len(turn1)  # the whole first turn, and more


def test_kept_cells_give_way_to_requests(pooled: object) -> None:
    """Kept sequences hold cells and slots only while nothing needs them: ten requests in a row through
    a lane of 8 slots, then one reserving a whole lane of 512 cells, all start at once."""
    from llmserve.engine.llamacpp import LlamaCppEngine

    assert isinstance(pooled, LlamaCppEngine)
    for n in range(10):
        run(pooled, [pooled.encode_chat([SYSTEM, ChatMessage("user", f"Count to {n}.")])], 2, SHORT)
    assert pooled.kept_tokens > 0
    whole = GenerationParams(temperature=0.0)  # max_tokens unset: the whole context, 512 cells
    assert pooled.kv_room(512)
    prompt_ids = pooled.encode_chat([SYSTEM, ChatMessage("user", "Count to 3.")])
    seq_id = pooled.start(prompt_ids, whole)
    assert pooled.kept_tokens == 0  # all of the lane is reserved now (it took its prompt's start first)
    assert pooled.prompt_tokens_shared > 0
    got = [t for _ in range(4) for t in pooled.step([seq_id]) if t is not None]
    pooled.release(seq_id)
    assert got == alone(pooled, prompt_ids, 4)


def test_a_busy_lane_keeps_nothing(pooled: object) -> None:
    """Kept cells slow every row of their lane (attention reads up to the last used cell): a lane keeps
    finished sequences only while at most `KEEP_BESIDE` (2) others run there; a third drops them."""
    from llmserve.engine.llamacpp import LlamaCppEngine
    from llmserve.engine.llamacpp_lanes import KEEP_BESIDE

    assert isinstance(pooled, LlamaCppEngine)
    assert KEEP_BESIDE == 2
    pooled.drop_kept()
    prompts = [pooled.encode_chat([SYSTEM, ChatMessage("user", f"Name {n} birds.")]) for n in range(2, 7)]
    run(pooled, [prompts[0]], 2, SHORT)
    assert pooled.kept_tokens > 0  # alone in its lane: kept
    ids = [pooled.start(p, SHORT) for p in prompts[1:3]]
    assert pooled.kept_tokens > 0  # two running beside it
    ids += [pooled.start(p, SHORT) for p in prompts[3:5]]
    assert pooled.kept_tokens == 0  # three and four: dropped
    for _ in range(3):
        pooled.step(ids)
    pooled.release(ids.pop())  # leaves with three others running: not kept
    assert pooled.kept_tokens == 0
    pooled.release(ids.pop())  # leaves with two others running: kept
    assert pooled.kept_tokens > 0
    for seq_id in ids:
        pooled.release(seq_id)
    pooled.drop_kept()
    assert pooled.kv_tokens_held == 0


def test_a_sequence_whose_donor_leaves_first_reads_its_whole_prompt(pooled: object) -> None:
    from llmserve.engine.llamacpp import LlamaCppEngine

    assert isinstance(pooled, LlamaCppEngine)
    first, second = (pooled.encode_chat([SYSTEM, ChatMessage("user", t)]) for t in ("Hi!", "Name a tree."))
    expected = alone(pooled, second, 10)
    shared = pooled.prompt_tokens_shared
    a = pooled.start(first, SHORT)
    b = pooled.start(second, SHORT)  # would take a's cells, once written
    pooled.release(a)  # gone before it wrote them
    got: list[int] = []
    while len(got) < 10:
        token = pooled.step([b])[0]
        if token is not None:
            got.append(token)
    pooled.release(b)
    assert got == expected
    assert pooled.prompt_tokens_shared == shared
