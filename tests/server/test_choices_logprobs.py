"""`n` choices (streamed with their index) and `logprobs`/`top_logprobs` (token, bytes, log probability
and alternatives, streamed too), on the tiny model in float32, checked against the raw model and
OpenAI's schemas."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from model_configs import plain
from starlette.testclient import TestClient
from wire import assert_schema, sse_data

from llmserve.server import create_app

USER = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def client(tiny_dir: Path) -> Iterator[TestClient]:
    app = create_app([plain(tiny_dir, "tiny", dtype="float32")], "tiny", preload="none")
    with TestClient(app) as test_client:
        yield test_client


def chat(client: TestClient, **body: Any) -> Any:
    response = client.post("/v1/chat/completions", json={"messages": USER, "max_tokens": 6, **body})
    assert response.status_code == 200, response.text
    assert_schema("CreateChatCompletionResponse", response.json())
    return response.json()


def stream(client: TestClient, **body: Any) -> list[Any]:
    payload = {"messages": USER, "max_tokens": 6, "stream": True, **body}
    response = client.post("/v1/chat/completions", json=payload)
    assert response.status_code == 200
    data = sse_data(response.text)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    for chunk in chunks:
        assert_schema("CreateChatCompletionStreamResponse", chunk)
    return chunks


def test_n_greedy_choices(client: TestClient) -> None:
    one = chat(client, temperature=0)
    three = chat(client, temperature=0, n=3)
    assert [c["index"] for c in three["choices"]] == [0, 1, 2]
    assert {c["message"]["content"] for c in three["choices"]} == {one["choices"][0]["message"]["content"]}
    usage = one["usage"]
    assert three["usage"] == {
        "prompt_tokens": usage["prompt_tokens"],  # the prompt counts once
        "completion_tokens": 3 * usage["completion_tokens"],
        "total_tokens": usage["prompt_tokens"] + 3 * usage["completion_tokens"],
    }


def test_n_sampled_choices_use_seed_plus_index(client: TestClient) -> None:
    both = chat(client, temperature=1.0, seed=11, n=2)["choices"]
    first = chat(client, temperature=1.0, seed=11)["choices"][0]["message"]["content"]
    second = chat(client, temperature=1.0, seed=12)["choices"][0]["message"]["content"]
    assert [c["message"]["content"] for c in both] == [first, second]


def test_n_streamed_with_their_index(client: TestClient) -> None:
    chunks = stream(client, temperature=1.0, seed=11, n=2, stream_options={"include_usage": True})
    roles = [c["choices"][0]["index"] for c in chunks[:2]]
    assert roles == [0, 1] and all(
        c["choices"][0]["delta"] == {"role": "assistant", "content": ""} for c in chunks[:2]
    )
    texts = {0: "", 1: ""}
    finished: list[int] = []
    for chunk in chunks[2:-1]:
        (choice,) = chunk["choices"]
        assert choice["index"] not in finished  # nothing for a choice after its finish chunk
        texts[choice["index"]] += choice["delta"].get("content", "")
        if choice["finish_reason"] is not None:
            finished.append(choice["index"])
    assert sorted(finished) == [0, 1]
    expected = [c["message"]["content"] for c in chat(client, temperature=1.0, seed=11, n=2)["choices"]]
    assert [texts[0], texts[1]] == expected
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 12


def reference_logprobs(tiny_dir: Path, generated: list[int]) -> torch.Tensor:
    """log_softmax of the raw model at each generated position (teacher forcing), float32."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).eval()
    prompt = tokenizer.apply_chat_template(USER, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        logits = model(torch.tensor([ids + generated])).logits[0]
    return torch.log_softmax(logits[len(ids) - 1 : len(ids) - 1 + len(generated)].float(), dim=-1)


def test_logprobs_match_the_raw_model(client: TestClient, tiny_dir: Path) -> None:
    from transformers import AutoTokenizer

    body = chat(client, temperature=0, logprobs=True, top_logprobs=3)
    choice = body["choices"][0]
    entries = choice["logprobs"]["content"]
    assert choice["logprobs"]["refusal"] is None
    assert len(entries) == body["usage"]["completion_tokens"] == 6  # finish "length": every token
    assert "".join(e["token"] for e in entries) == choice["message"]["content"]
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    generated = [tokenizer.convert_tokens_to_ids(tokenizer.tokenize(e["token"]))[0] for e in entries]
    expected = reference_logprobs(tiny_dir, generated)
    for position, entry in enumerate(entries):
        assert entry["bytes"] == list(entry["token"].encode("utf-8"))
        assert abs(entry["logprob"] - float(expected[position, generated[position]])) < 1e-4
        assert len(entry["top_logprobs"]) == 3
        assert entry["top_logprobs"][0]["token"] == entry["token"]  # greedy: the likeliest token
        assert entry["top_logprobs"][0]["logprob"] == entry["logprob"]
        values = [t["logprob"] for t in entry["top_logprobs"]]
        assert values == sorted(values, reverse=True)


def test_logprobs_without_alternatives_and_off(client: TestClient) -> None:
    entries = chat(client, temperature=0, logprobs=True)["choices"][0]["logprobs"]["content"]
    assert all(e["top_logprobs"] == [] for e in entries)
    assert chat(client, temperature=0)["choices"][0]["logprobs"] is None


def test_streamed_logprobs_add_up_to_the_whole(client: TestClient) -> None:
    whole = chat(client, temperature=0, logprobs=True, top_logprobs=2)["choices"][0]["logprobs"]["content"]
    chunks = stream(client, temperature=0, logprobs=True, top_logprobs=2)
    pieces = [
        e
        for c in chunks
        if c["choices"] and c["choices"][0].get("logprobs")
        for e in c["choices"][0]["logprobs"]["content"]
    ]
    assert pieces == whole
    assert all(c["choices"][0]["logprobs"] is None for c in chunks if c["choices"][0]["delta"].get("role"))
