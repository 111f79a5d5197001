"""The chat parameters that shape the logits: OpenAI's presence_penalty, frequency_penalty, logit_bias,
and vLLM's repetition_penalty, min_p, stop_token_ids, ignore_eos, min_tokens. Exact rules on small
vectors, then the real app on the tiny model (repetition_penalty against raw `generate`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from draws import draws
from model_configs import plain
from starlette.testclient import TestClient

from llmserve.engine.base import GenerationParams
from llmserve.engine.sampling import History, sample, shape
from llmserve.server import create_app

USER = [{"role": "user", "content": "What is the capital of France?"}]


def test_shape_rules() -> None:
    logits = torch.tensor([1.0, -2.0, 3.0, 0.5])
    same = shape(logits, GenerationParams(), History(), ())
    assert torch.equal(same, logits)
    biased = shape(logits, GenerationParams(logit_bias=((1, 10.0), (3, -1.5))), History(), ())
    assert biased.tolist() == [1.0, 8.0, 3.0, -1.0]
    history = History(prompt=[0], generated=[2, 2, 1])
    rep = shape(logits, GenerationParams(repetition_penalty=2.0), history, ())
    assert rep.tolist() == [0.5, -4.0, 1.5, 0.5]  # positive / 2, negative * 2, unseen as is
    pen = shape(logits, GenerationParams(presence_penalty=0.5, frequency_penalty=0.25), history, ())
    assert pen.tolist() == [1.0, -2.75, 2.0, 0.5]  # token 2: 3 - 2*0.25 - 0.5; token 1: -2 - 0.25 - 0.5
    early = shape(logits, GenerationParams(min_tokens=4, stop_token_ids=(3,)), history, enders=(0,))
    assert early.tolist() == [float("-inf"), -2.0, 3.0, float("-inf")]  # 3 generated < 4: no ending yet
    late = shape(logits, GenerationParams(min_tokens=3, stop_token_ids=(3,)), history, enders=(0,))
    assert torch.equal(late, logits)


def test_overflowing_logits_still_give_a_token() -> None:
    huge = shape(
        torch.tensor([1.0, 2.0, -1.0]), GenerationParams(repetition_penalty=1e-300), History([0, 1, 2]), ()
    )
    generator = torch.Generator().manual_seed(0)
    assert sample(huge, GenerationParams(temperature=1.0), generator) in {0, 1}  # both overflowed to inf


def test_min_p() -> None:
    # probabilities of [0, 5, 4, 1, 4.5] at temperature 1: 0.004, 0.51, 0.19, 0.01, 0.31
    assert draws(GenerationParams(temperature=1.0, min_p=0.5)) == {1, 4}
    assert draws(GenerationParams(temperature=1.0, min_p=0.3)) == {1, 2, 4}
    assert draws(GenerationParams(temperature=1.0, min_p=1.0)) == {1}


@pytest.fixture(scope="module")
def client(tiny_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app([plain(tiny_dir, "tiny")], "tiny", preload="none")) as test_client:
        yield test_client


def chat(client: TestClient, **body: Any) -> Any:
    response = client.post("/v1/chat/completions", json={"messages": USER, "temperature": 0, **body})
    assert response.status_code == 200, response.text
    return response.json()


def token_ids(tiny_dir: Path, text: str) -> list[int]:
    from transformers import AutoTokenizer

    return list(AutoTokenizer.from_pretrained(tiny_dir)(text, add_special_tokens=False)["input_ids"])


def eos_id(tiny_dir: Path) -> int:
    from transformers import AutoTokenizer

    return int(AutoTokenizer.from_pretrained(tiny_dir).eos_token_id)


def test_logit_bias_forces_a_token(client: TestClient, tiny_dir: Path) -> None:
    (token,) = token_ids(tiny_dir, "x")
    body = chat(client, max_tokens=4, logit_bias={str(token): 100})
    assert body["choices"][0]["message"]["content"] == "xxxx"


def test_min_tokens_and_ignore_eos(client: TestClient, tiny_dir: Path) -> None:
    eos = str(eos_id(tiny_dir))
    ends = chat(client, max_tokens=8, logit_bias={eos: 100})
    assert (ends["choices"][0]["finish_reason"], ends["usage"]["completion_tokens"]) == ("stop", 1)
    assert ends["choices"][0]["message"]["content"] == ""
    later = chat(client, max_tokens=8, logit_bias={eos: 100}, min_tokens=3)
    assert (later["choices"][0]["finish_reason"], later["usage"]["completion_tokens"]) == ("stop", 4)
    never = chat(client, max_tokens=5, logit_bias={eos: 100}, ignore_eos=True)
    assert (never["choices"][0]["finish_reason"], never["usage"]["completion_tokens"]) == ("length", 5)


def test_stop_token_ids(client: TestClient, tiny_dir: Path) -> None:
    (x,) = token_ids(tiny_dir, "x")
    stopped = chat(client, max_tokens=8, logit_bias={str(x): 100}, stop_token_ids=[x])
    assert stopped["choices"][0]["message"]["content"] == ""  # the stop token is not part of the text
    assert (stopped["choices"][0]["finish_reason"], stopped["usage"]["completion_tokens"]) == ("stop", 1)
    delayed = chat(client, max_tokens=8, logit_bias={str(x): 100}, stop_token_ids=[x], min_tokens=2)
    assert delayed["usage"]["completion_tokens"] == 3 and delayed["choices"][0]["finish_reason"] == "stop"


def test_repetition_penalty_matches_raw_generate(client: TestClient, tiny_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    prompt = tokenizer.apply_chat_template(USER, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids
    with torch.inference_mode():
        out = model.generate(ids, max_new_tokens=12, do_sample=False, repetition_penalty=1.8)
    expected = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    assert chat(client, max_tokens=12, repetition_penalty=1.8)["choices"][0]["message"]["content"] == expected
    assert chat(client, max_tokens=12)["choices"][0]["message"]["content"] != expected


def test_penalties_change_a_repetitive_answer(client: TestClient, tiny_dir: Path) -> None:
    (x,) = token_ids(tiny_dir, "x")
    stuck = chat(client, max_tokens=6, logit_bias={str(x): 5})["choices"][0]["message"]["content"]
    freed = chat(client, max_tokens=6, logit_bias={str(x): 5}, frequency_penalty=2.0, presence_penalty=2.0)
    assert stuck.count("x") > freed["choices"][0]["message"]["content"].count("x")


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        ({"presence_penalty": 2.5}, "presence_penalty", "Input should be less than or equal to 2"),
        ({"frequency_penalty": -3}, "frequency_penalty", "Input should be greater than or equal to -2"),
        (
            {"logit_bias": {"abc": 1}},
            "logit_bias",
            "keys are token ids (whole numbers as strings), not 'abc'",
        ),
        ({"logit_bias": {"5": 101}}, "logit_bias.5", "Input should be less than or equal to 100"),
        ({"repetition_penalty": 0}, "repetition_penalty", "Input should be greater than 0"),
        ({"min_p": 1.5}, "min_p", "Input should be less than or equal to 1"),
        ({"stop_token_ids": [-1]}, "stop_token_ids[0]", "Input should be greater than or equal to 0"),
        ({"min_tokens": -1}, "min_tokens", "Input should be greater than or equal to 0"),
    ],
)
def test_bad_values_are_400s(client: TestClient, body: dict[str, Any], param: str, message: str) -> None:
    response = client.post("/v1/chat/completions", json={"messages": USER, **body})
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": f"invalid value for '{param}': {message}",
        "type": "invalid_request_error",
        "param": param,
        "code": "invalid_request",
    }


def test_token_ids_outside_the_vocabulary_are_400s(client: TestClient) -> None:
    for body in ({"logit_bias": {"999999": 1}}, {"stop_token_ids": [999999]}):
        response = client.post("/v1/chat/completions", json={"messages": USER, **body})
        assert response.status_code == 400
        assert response.json()["error"]["message"].startswith(
            "token id 999999 is outside this model's vocabulary"
        )
