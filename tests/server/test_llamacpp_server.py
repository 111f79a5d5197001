"""The llama.cpp engine behind the real app, on SmolLM2's GGUF file: the model card names the engine and
its KV cells, every sampling feature of chat completions works on llama.cpp's logits, a prompt that
cannot fit is a 400 before it is queued, the event loop answers a health check within 100 ms while 16
streams decode, and unload/reload are quick."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import pytest
from servers import live_server
from smollm2_gguf import smollm2_entry

from llmserve.server import create_app

pytestmark = pytest.mark.slow
pytest.importorskip("llama_cpp")
MODEL = "smol"


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    entry = smollm2_entry(max_batch_size=16, context_length=512)
    with live_server(create_app([entry], MODEL, preload="none")) as url:
        assert httpx.post(f"{url}/v1/models/reload", json={"model_id": MODEL}, timeout=60).status_code == 200
        yield url


def chat(base_url: str, **body: Any) -> httpx.Response:
    body.setdefault("messages", [{"role": "user", "content": "Write a short poem about bread."}])
    return httpx.post(f"{base_url}/v1/chat/completions", json={"model": MODEL, **body}, timeout=120)


def test_the_card_names_the_engine_and_its_cells(base_url: str) -> None:
    card = httpx.get(f"{base_url}/v1/models/{MODEL}").json()
    assert card["engine"] == "llama.cpp" and card["status"] == "loaded"
    assert card["kv_cache"] == {
        "budget_tokens": 16 * 512,  # every sequence its own 512 cells
        "reserved_tokens": 0,
        "held_tokens": 0,
        "bytes_per_token": 23040,  # 30 layers x 3 KV heads x (64 + 64) x 2 bytes
        "source": "derived",
    }


def test_a_seed_repeats_and_another_seed_differs(base_url: str) -> None:
    texts = [
        chat(base_url, temperature=1.0, seed=seed, max_tokens=24).json()["choices"][0]["message"]["content"]
        for seed in (1, 1, 2)
    ]
    assert texts[0] == texts[1] != texts[2]


def test_stop_strings_n_and_logprobs(base_url: str) -> None:
    body = chat(
        base_url, temperature=0.7, seed=3, n=2, max_tokens=40, stop=["\n"], logprobs=True, top_logprobs=2
    )
    assert body.status_code == 200
    choices = body.json()["choices"]
    assert [c["index"] for c in choices] == [0, 1]
    for choice in choices:
        assert "\n" not in choice["message"]["content"]
        assert choice["finish_reason"] in ("stop", "length")
        entries = choice["logprobs"]["content"]
        assert entries and all(len(e["top_logprobs"]) == 2 and e["logprob"] <= 0 for e in entries)


def test_logit_bias_and_penalties_shape_the_logits(base_url: str) -> None:
    hello = httpx.post(
        f"{base_url}/v1/completions", json={"model": MODEL, "prompt": "x", "max_tokens": 1, "logprobs": 1}
    ).json()
    assert hello["choices"][0]["text"]
    forced = chat(base_url, temperature=0, max_tokens=3, logit_bias={"38699": 100}).json()  # " Hello"
    assert forced["choices"][0]["message"]["content"] == " Hello Hello Hello"
    short = [{"role": "user", "content": "Say OK."}]
    assert (
        chat(base_url, messages=short, temperature=0, max_tokens=20).json()["usage"]["completion_tokens"] < 20
    )
    held = chat(base_url, messages=short, temperature=0, max_tokens=20, min_tokens=20).json()
    assert held["usage"]["completion_tokens"] == 20 and held["choices"][0]["finish_reason"] == "length"
    plain = chat(base_url, temperature=0, max_tokens=30, repetition_penalty=1.0).json()
    penalised = chat(base_url, temperature=0, max_tokens=30, frequency_penalty=2.0).json()
    assert plain["choices"][0]["message"]["content"] != penalised["choices"][0]["message"]["content"]


def test_json_schema_and_forced_tool_calls(base_url: str) -> None:
    schema = {
        "type": "object",
        "properties": {"title": {"type": "string", "maxLength": 20}, "lines": {"type": "integer"}},
        "required": ["title", "lines"],
        "additionalProperties": False,
    }
    answer = chat(
        base_url,
        temperature=0,
        max_tokens=60,
        response_format={"type": "json_schema", "json_schema": {"name": "poem", "schema": schema}},
    ).json()
    jsonschema.validate(json.loads(answer["choices"][0]["message"]["content"]), schema)
    tool = {
        "type": "function",
        "function": {
            "name": "bake",
            "parameters": {
                "type": "object",
                "properties": {"loaves": {"type": "integer"}},
                "required": ["loaves"],
                "additionalProperties": False,
            },
        },
    }
    called = chat(
        base_url,
        temperature=0,
        max_tokens=60,
        tools=[tool],
        tool_choice={"type": "function", "function": {"name": "bake"}},
    ).json()
    (call,) = called["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "bake" and isinstance(
        json.loads(call["function"]["arguments"])["loaves"], int
    )
    assert called["choices"][0]["finish_reason"] == "tool_calls"


def test_a_prompt_beyond_the_context_is_a_400_before_it_is_queued(base_url: str) -> None:
    long = " ".join(["bread"] * 600)
    response = chat(base_url, messages=[{"role": "user", "content": long}], max_tokens=8)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "context_length_exceeded"
    assert "512" in response.json()["error"]["message"]


def test_health_answers_within_100_ms_during_16_streams(base_url: str) -> None:
    async def stream(client: httpx.AsyncClient, i: int) -> int:
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": f"Tell a story about dragon {i}."}],
            "max_tokens": 64,
            "temperature": 0,
            "ignore_eos": True,
            "stream": True,
        }
        chunks = 0
        async with client.stream("POST", f"{base_url}/v1/chat/completions", json=body) as response:
            async for line in response.aiter_lines():
                chunks += line.startswith("data: {")
        return chunks

    async def probe(client: httpx.AsyncClient, done: asyncio.Event) -> list[float]:
        latencies: list[float] = []
        await asyncio.sleep(1.0)  # the streams are decoding
        while not done.is_set():
            started = time.perf_counter()
            assert (await client.get(f"{base_url}/health")).status_code == 200
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0.05)
        return latencies

    async def main() -> tuple[list[int], list[float]]:
        async with httpx.AsyncClient(timeout=120) as client:
            done = asyncio.Event()
            prober = asyncio.create_task(probe(client, done))
            counts = await asyncio.gather(*(stream(client, i) for i in range(16)))
            done.set()
            return list(counts), await prober

    counts, latencies = asyncio.run(main())
    assert all(c >= 64 for c in counts)
    assert len(latencies) >= 10
    p95 = sorted(latencies)[int(0.95 * len(latencies))]
    figures = f"health p50 {statistics.median(latencies):.3f}s, p95 {p95:.3f}s, max {max(latencies):.3f}s"
    assert p95 < 0.1 and max(latencies) < 0.5, figures


def test_unload_frees_and_reload_is_quick(base_url: str) -> None:
    assert httpx.post(f"{base_url}/v1/models/unload", json={"model_id": MODEL}).json()["status"] == "unloaded"
    started = time.perf_counter()
    assert (
        httpx.post(f"{base_url}/v1/models/reload", json={"model_id": MODEL}, timeout=60).json()["status"]
        == "loaded"
    )
    assert time.perf_counter() - started < 1.5
    assert chat(base_url, temperature=0, max_tokens=4).status_code == 200
