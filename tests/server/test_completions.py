"""POST /v1/completions (legacy): raw prompts as strings or token ids, n, echo, logprobs in the legacy
shape, stop, streaming; the text equals raw `generate` on the same ids; a model without a chat template
still completes; clear 400s for what no model here can do."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from model_configs import plain
from starlette.testclient import TestClient
from wire import assert_schema, sse_data

from llmserve.server import create_app

PROMPT = "Once upon a time"


@pytest.fixture(scope="module")
def bare_dir(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    bare = tmp_path_factory.mktemp("models") / "bare"
    shutil.copytree(tiny_dir, bare)
    (bare / "chat_template.jinja").unlink()
    return bare


@pytest.fixture(scope="module")
def client(tiny_dir: Path, bare_dir: Path) -> Iterator[TestClient]:
    models = [plain(tiny_dir, "tiny", dtype="float32"), plain(bare_dir, "bare", dtype="float32")]
    with TestClient(create_app(models, "tiny", preload="none")) as test_client:
        yield test_client


def complete(client: TestClient, **body: Any) -> Any:
    response = client.post("/v1/completions", json={"model": "tiny", "temperature": 0, **body})
    assert response.status_code == 200, response.text
    assert_schema("CreateCompletionResponse", response.json())
    return response.json()


def raw(tiny_dir: Path, ids: list[int], new: int) -> str:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    with torch.inference_mode():
        out = model.generate(torch.tensor([ids]), max_new_tokens=new, do_sample=False)[0, len(ids) :].tolist()
    return str(tokenizer.decode(out, skip_special_tokens=True))


def prompt_ids(tiny_dir: Path, text: str) -> list[int]:
    from transformers import AutoTokenizer

    return list(AutoTokenizer.from_pretrained(tiny_dir)(text)["input_ids"])


def test_a_string_prompt_equals_raw_generate(client: TestClient, tiny_dir: Path) -> None:
    body = complete(client, prompt=PROMPT)  # max_tokens defaults to 16, as OpenAI's
    ids = prompt_ids(tiny_dir, PROMPT)
    text = raw(tiny_dir, ids, 16)
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-") and body["model"] == "tiny"
    assert body["choices"] == [{"text": text, "index": 0, "logprobs": None, "finish_reason": "length"}]
    assert body["usage"] == {
        "prompt_tokens": len(ids),
        "completion_tokens": 16,
        "total_tokens": len(ids) + 16,
    }
    by_ids = complete(client, prompt=ids)
    assert by_ids["choices"][0]["text"] == text


def test_several_prompts_times_n_are_indexed_prompt_major(client: TestClient, tiny_dir: Path) -> None:
    prompts = [PROMPT, "The sea"]
    body = complete(client, prompt=prompts, n=2, max_tokens=4)
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    texts = [c["text"] for c in body["choices"]]
    assert texts[0] == texts[1] == complete(client, prompt=PROMPT, max_tokens=4)["choices"][0]["text"]
    assert texts[2] == texts[3] == complete(client, prompt="The sea", max_tokens=4)["choices"][0]["text"]
    tokens = sum(len(prompt_ids(tiny_dir, p)) for p in prompts)
    assert body["usage"]["prompt_tokens"] == tokens and body["usage"]["completion_tokens"] == 16


def test_echo(client: TestClient, tiny_dir: Path) -> None:
    plain_text = complete(client, prompt=PROMPT, max_tokens=4)["choices"][0]["text"]
    assert (
        complete(client, prompt=PROMPT, max_tokens=4, echo=True)["choices"][0]["text"] == PROMPT + plain_text
    )
    ids = prompt_ids(tiny_dir, PROMPT)
    echoed = complete(client, prompt=ids, max_tokens=4, echo=True)["choices"][0]["text"]
    assert echoed.endswith(plain_text) and echoed.strip().startswith(PROMPT)


def test_legacy_logprobs(client: TestClient) -> None:
    choice = complete(client, prompt=PROMPT, max_tokens=5, logprobs=2)["choices"][0]
    logprobs = choice["logprobs"]
    assert set(logprobs) == {"tokens", "token_logprobs", "top_logprobs", "text_offset"}
    assert "".join(logprobs["tokens"]) == choice["text"]
    assert len(logprobs["token_logprobs"]) == 5 and all(lp <= 0 for lp in logprobs["token_logprobs"])
    offsets = [0]
    for token in logprobs["tokens"][:-1]:
        offsets.append(offsets[-1] + len(token))
    assert logprobs["text_offset"] == offsets
    for token, lp, top in zip(
        logprobs["tokens"], logprobs["token_logprobs"], logprobs["top_logprobs"], strict=True
    ):
        assert len(top) <= 2 and max(top.values()) == lp and top[token] == lp  # greedy: its own best


def test_stream(client: TestClient) -> None:
    whole = complete(client, prompt=PROMPT, max_tokens=6)["choices"][0]["text"]
    body = {
        "model": "tiny",
        "prompt": PROMPT,
        "max_tokens": 6,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    data = sse_data(client.post("/v1/completions", json=body).text)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert all(c["object"] == "text_completion" for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks[:-1]) == whole
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-2])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 6


def test_stop(client: TestClient) -> None:
    whole = complete(client, prompt=PROMPT, max_tokens=12)["choices"][0]["text"]
    cut = whole[3:6]
    stopped = complete(client, prompt=PROMPT, max_tokens=12, stop=[cut])["choices"][0]
    assert stopped["text"] == whole[: whole.index(cut)] and stopped["finish_reason"] == "stop"


def test_a_model_without_a_chat_template_still_completes(client: TestClient) -> None:
    assert complete(client, model="bare", prompt=PROMPT, max_tokens=3)["usage"]["completion_tokens"] == 3
    chat = client.post(
        "/v1/chat/completions", json={"model": "bare", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert chat.status_code == 400


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        ({"prompt": PROMPT, "suffix": "end"}, "suffix", "'suffix' (insertion) is not supported"),
        ({"prompt": PROMPT, "echo": True, "logprobs": 1}, "echo", "'echo' with 'logprobs'"),
        ({"prompt": ""}, "prompt", "'prompt' must not be empty"),
        ({"prompt": []}, "prompt", "'prompt' must be a string"),
        ({"prompt": [5, 99999999]}, None, "token id 99999999 is outside this model's vocabulary"),
        ({"prompt": PROMPT, "logprobs": 6}, "logprobs", "invalid value for 'logprobs'"),
        ({"prompt": PROMPT, "best_of": 3}, "best_of", "'best_of' other than n is not supported"),
        (
            {"prompt": PROMPT, "n": 2, "max_tokens": 1, "stream_options": {"include_usage": True}},
            "stream_options",
            "'stream_options' is only allowed",
        ),
        ({}, "prompt", "missing required parameter 'prompt'"),
    ],
)
def test_bad_requests(client: TestClient, body: dict[str, Any], param: str | None, message: str) -> None:
    response = client.post("/v1/completions", json={"model": "tiny", **body})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["message"].startswith(message) and error["param"] == param, error
