"""The embeddings wire type alone: what a body parses to (defaults included), the exact 400 each bad
field gets, and round trips. No server, no model."""

from __future__ import annotations

from typing import Any

import pytest

from llmserve.errors import InvalidRequest
from llmserve.protocol.base import parse_request
from llmserve.protocol.embeddings import EmbeddingRequest


def test_defaults() -> None:
    request = parse_request(EmbeddingRequest, {"input": "hello"})
    assert request.model_fields_set == {"input"}
    assert request.model_dump() == {
        "model": None,
        "input": "hello",
        "encoding_format": "float",
        "dimensions": None,
        "user": None,
    }


@pytest.mark.parametrize("value", ["hello", ["a", "b"], [1, 2, 3], [[1, 2], [3]], []])
def test_the_shapes_of_input_round_trip(value: Any) -> None:
    # an empty list parses here; the service refuses it (it knows the model's limits as well)
    body = {"model": "minilm", "input": value, "encoding_format": "base64", "dimensions": 384, "user": "u"}
    request = parse_request(EmbeddingRequest, body)
    assert request.model_dump() == body
    assert parse_request(EmbeddingRequest, request.model_dump()) == request


@pytest.mark.parametrize(
    ("body", "message", "param"),
    [
        (["hello"], "the request body must be a JSON object", None),
        ({}, "missing required parameter 'input'", "input"),
        ({"input": 5}, "invalid value for 'input': Input should be a valid string", "input"),
        ({"input": [1.5]}, "invalid value for 'input': Input should be a valid string", "input"),
        ({"input": ["a", [1]]}, "invalid value for 'input': Input should be a valid string", "input"),
        (
            {"input": "x", "encoding_format": "hex"},
            "invalid value for 'encoding_format': Input should be 'float' or 'base64'",
            "encoding_format",
        ),
        (
            {"input": "x", "dimensions": 0},
            "invalid value for 'dimensions': Input should be greater than or equal to 1",
            "dimensions",
        ),
        (
            {"input": "x", "dimensions": 1.0},
            "invalid value for 'dimensions': Input should be a valid integer",
            "dimensions",
        ),
        ({"input": "x", "model": 1}, "invalid value for 'model': Input should be a valid string", "model"),
        ({"input": "x", "user": 3}, "invalid value for 'user': Input should be a valid string", "user"),
        ({"input": "x", "stream": True}, "unknown parameter 'stream'", "stream"),
    ],
)
def test_bad_fields_are_named(body: Any, message: str, param: str | None) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_request(EmbeddingRequest, body)
    assert (str(caught.value), caught.value.param) == (message, param)
