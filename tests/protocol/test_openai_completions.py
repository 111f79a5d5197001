"""The legacy completions wire type alone: what a body parses to (OpenAI's defaults for this endpoint
included), the exact 400 each bad field gets, the four shapes of `prompt`, and round trips. No server,
no model."""

from __future__ import annotations

from typing import Any

import pytest

from llmserve.errors import InvalidRequest
from llmserve.protocol.base import INT64_MAX, parse_request
from llmserve.protocol.openai_completions import CompletionRequest


def parse(**body: Any) -> CompletionRequest:
    return parse_request(CompletionRequest, {"prompt": "Once", **body})


def test_defaults() -> None:
    request = parse()
    assert request.model_fields_set == {"prompt"}  # max_tokens left out: the model's default may apply
    assert request.model_dump() == {
        "model": None,
        "prompt": "Once",
        "stream": False,
        "stream_options": None,
        "temperature": None,
        "top_p": None,
        "top_k": None,
        "repetition_penalty": None,
        "min_p": None,
        "stop": None,
        "seed": None,
        "presence_penalty": None,
        "frequency_penalty": None,
        "logit_bias": None,
        "max_tokens": 16,  # OpenAI's default for this endpoint
        "n": 1,
        "logprobs": None,
        "echo": False,
        "best_of": None,
        "suffix": None,
        "user": None,
    }


def test_a_full_body_round_trips() -> None:
    body = {
        "model": "tiny",
        "prompt": [[1, 2, 3], [4]],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.0,
        "top_p": 1.0,
        "top_k": -1,
        "repetition_penalty": 1.2,
        "min_p": 0.1,
        "stop": "\n",
        "seed": INT64_MAX,
        "presence_penalty": 1.0,
        "frequency_penalty": -1.0,
        "logit_bias": {"42": 5.0},
        "max_tokens": 0,
        "n": 3,
        "logprobs": 5,
        "echo": True,
        "best_of": 3,
        "suffix": "",
        "user": "u",
    }
    request = parse_request(CompletionRequest, body)
    assert request.model_dump(exclude_unset=True) == body
    assert parse_request(CompletionRequest, request.model_dump(exclude_unset=True)) == request
    assert (request.stop_strings(), request.logit_biases()) == (("\n",), ((42, 5.0),))
    request.check_stream_options()


@pytest.mark.parametrize(
    ("prompt", "prompts"),
    [
        ("Once", ["Once"]),
        (["Once", "Twice"], ["Once", "Twice"]),
        ([1, 2, 3], [(1, 2, 3)]),  # one prompt as token ids
        ([[1, 2], [3]], [(1, 2), (3,)]),
    ],
)
def test_the_four_shapes_of_prompt(prompt: Any, prompts: list[Any]) -> None:
    assert parse(prompt=prompt).prompts() == prompts


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ([], "'prompt' must be a string, strings, token ids or lists of them"),
        ("", "'prompt' must not be empty"),
        (["Once", ""], "'prompt' must not be empty"),
        ([[1], []], "'prompt' must not be empty"),
    ],
)
def test_empty_prompts_are_named(prompt: Any, message: str) -> None:
    request = parse(prompt=prompt)  # the type takes them; prompts() says what is wrong
    with pytest.raises(InvalidRequest) as caught:
        request.prompts()
    assert (str(caught.value), caught.value.param) == (message, "prompt")


@pytest.mark.parametrize(
    ("body", "message", "param"),
    [
        ("Once", "the request body must be a JSON object", None),
        ({}, "missing required parameter 'prompt'", "prompt"),
        ({"prompt": 5}, "invalid value for 'prompt': Input should be a valid string", "prompt"),
        ({"prompt": ["a", [1]]}, "invalid value for 'prompt': Input should be a valid string", "prompt"),
        ({"prompt": [[1, "a"]]}, "invalid value for 'prompt': Input should be a valid string", "prompt"),
        ({"prompt": "x", "messages": []}, "unknown parameter 'messages'", "messages"),
        (
            {"prompt": "x", "max_tokens": -1},
            "invalid value for 'max_tokens': Input should be greater than or equal to 0",
            "max_tokens",
        ),
        ({"prompt": "x", "n": 0}, "invalid value for 'n': Input should be greater than or equal to 1", "n"),
        ({"prompt": "x", "n": 129}, "invalid value for 'n': Input should be less than or equal to 128", "n"),
        (
            {"prompt": "x", "logprobs": 6},
            "invalid value for 'logprobs': Input should be less than or equal to 5",
            "logprobs",
        ),
        (
            {"prompt": "x", "logprobs": True},
            "invalid value for 'logprobs': Input should be a valid integer",
            "logprobs",
        ),
        (
            {"prompt": "x", "best_of": 0},
            "invalid value for 'best_of': Input should be greater than or equal to 1",
            "best_of",
        ),
        ({"prompt": "x", "echo": 1}, "invalid value for 'echo': Input should be a valid boolean", "echo"),
        (
            {"prompt": "x", "suffix": 1},
            "invalid value for 'suffix': Input should be a valid string",
            "suffix",
        ),
        # the sampling fields it shares with chat
        (
            {"prompt": "x", "seed": -INT64_MAX - 2},
            "invalid value for 'seed': Input should be greater than or equal to -9223372036854775808",
            "seed",
        ),
        ({"prompt": "x", "stop": [""]}, "invalid value for 'stop': stop strings must not be empty", "stop"),
        (
            {"prompt": "x", "min_p": 1.5},
            "invalid value for 'min_p': Input should be less than or equal to 1",
            "min_p",
        ),
    ],
)
def test_bad_fields_are_named(body: Any, message: str, param: str | None) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_request(CompletionRequest, body)
    assert (str(caught.value), caught.value.param) == (message, param)


def test_stream_options_only_with_stream() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse(stream_options={"include_usage": True}).check_stream_options()
    assert (str(caught.value), caught.value.param) == (
        "'stream_options' is only allowed when 'stream' is true",
        "stream_options",
    )
