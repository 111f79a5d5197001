"""The slow tier: today's clients, unchanged, ask the real SmolLM2-135M-Instruct (configs/default.json,
at its sampling defaults) the README's question over a live server, each in its own API: the openai SDK
through the Responses API, the anthropic SDK through the Messages API (by a Claude model name routed
with --model-alias's pattern), the ollama client through Ollama's chat. Each answers Paris."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import anthropic
import ollama
import openai
import pytest
from model_configs import require_smollm2
from servers import live_server
from smollm2_gguf import default_config_on_transformers

from llmserve.server import create_app

pytestmark = pytest.mark.slow
QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    require_smollm2()
    smollm2 = default_config_on_transformers()[0]
    smollm2 = dataclasses.replace(smollm2, model_aliases=("claude-*",))
    with live_server(create_app([smollm2], smollm2.api_id, preload="default")) as url:
        yield url


def test_openai_responses(base_url: str) -> None:
    with openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0) as client:
        response = client.responses.create(model="default", input=QUESTION)
    assert response.status == "completed" and "Paris" in response.output_text


def test_anthropic_messages(base_url: str) -> None:
    with anthropic.Anthropic(base_url=base_url, api_key="unused", max_retries=0) as client:
        message = client.messages.create(
            model="claude-sonnet-4-5", max_tokens=40, messages=[{"role": "user", "content": QUESTION}]
        )
    text = "".join(block.text for block in message.content if block.type == "text")
    assert message.stop_reason == "end_turn" and "Paris" in text


def test_ollama_chat(base_url: str) -> None:
    client = ollama.Client(host=base_url)
    try:
        answer = client.chat(
            model="SmolLM2-135M-Instruct:latest", messages=[{"role": "user", "content": QUESTION}]
        )
        streamed = "".join(
            part.message.content or ""
            for part in client.chat(
                model="SmolLM2-135M-Instruct", messages=[{"role": "user", "content": QUESTION}], stream=True
            )
        )
    finally:
        client._client.close()
    assert answer.done_reason == "stop" and "Paris" in (answer.message.content or "")
    assert streamed == answer.message.content
