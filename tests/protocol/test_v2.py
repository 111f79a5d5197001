"""protocol/v2: V2 request bodies parsed into frozen values, and the 400 that names the wrong field."""

from __future__ import annotations

from typing import Any

import pytest

from llmserve.errors import InvalidRequest
from llmserve.protocol.v2 import (
    LoadRequest,
    TextParameters,
    TextRequest,
    generate_request,
    index_request,
    infer_request,
    load_request,
    text_parameters,
    unload_request,
)


def test_generate_request_with_every_parameter() -> None:
    body = {
        "text_input": "hi",
        "parameters": {"max_tokens": 5, "temperature": 0, "top_p": 0.5, "top_k": 3, "seed": 7, "stop": "x"},
    }
    assert generate_request(body) == TextRequest(
        "hi",
        TextParameters(
            max_tokens=5,
            temperature=0.0,
            top_p=0.5,
            top_k=3,
            seed=7,
            stop=("x",),
            given=frozenset({"max_tokens", "temperature", "top_p", "top_k", "seed", "stop"}),
        ),
    )


def test_parameters_left_out_are_not_given() -> None:
    assert text_parameters(None) == TextParameters()
    assert text_parameters({"stream": True}) == TextParameters(stream=True, given=frozenset({"stream"}))
    assert text_parameters({"max_tokens": 0}).max_tokens is None  # 0: as many as the model allows


@pytest.mark.parametrize(
    ("parameters", "message", "param"),
    [
        ([], "'parameters' must be a JSON object", "parameters"),
        (
            {"n": 2},
            "unknown parameter(s) n; accepted: max_tokens, temperature, top_p, top_k, seed, stop, stream",
            "parameters",
        ),
        ({"temperature": 3}, "parameters.temperature must be a number from 0 to 2", "temperature"),
        ({"top_p": True}, "parameters.top_p must be a number from 0 to 1", "top_p"),
        ({"top_k": -1}, "parameters.top_k must be a whole number (0 or more)", "top_k"),
        ({"seed": 2**63}, "parameters.seed must be a whole number (0 or more) below 2**63", "seed"),
        ({"stream": "yes"}, "parameters.stream must be true or false", "stream"),
        ({"stop": ["a", ""]}, "parameters.stop must be a string or a list of strings", "stop"),
    ],
)
def test_bad_parameters_name_the_field(parameters: Any, message: str, param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        text_parameters(parameters)
    assert (caught.value.message, caught.value.param) == (message, param)


def test_the_text_is_checked_before_the_parameters() -> None:
    with pytest.raises(InvalidRequest) as caught:
        generate_request({"text_input": "", "parameters": {"n": 1}})
    assert caught.value.param == "text_input"


def test_infer_takes_one_bytes_tensor_and_keeps_the_id() -> None:
    tensor = {"name": "text_input", "datatype": "BYTES", "shape": [1], "data": ["hi"]}
    assert infer_request({"id": "r1", "inputs": [tensor]}) == TextRequest("hi", TextParameters(), "r1")
    assert infer_request({"id": 5, "inputs": [tensor]}).id is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "the request body must be a JSON object"),
        ({"inputs": {}}, "'inputs' must be a list of tensors"),
        (
            {"inputs": [{"name": "text_input", "datatype": "FP32", "data": ["x"]}]},
            "'inputs' needs one BYTES tensor named text_input",
        ),
        (
            {"inputs": [{"name": "text_input", "datatype": "BYTES", "data": ["x", "y"]}]},
            "text_input takes one string (shape [1])",
        ),
        (
            {"inputs": [{"name": "text_input", "datatype": "BYTES", "data": [1]}]},
            "'text_input' must be a non-empty string",
        ),
    ],
)
def test_bad_infer_bodies(body: Any, message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        infer_request(body)
    assert caught.value.message == message


def test_repository_bodies() -> None:
    assert index_request({}) is False
    assert index_request({"ready": True}) is True
    assert load_request({}) == LoadRequest()
    assert load_request({"parameters": {"config": None}}) == LoadRequest(registers=True, config=None)
    unload_request({"parameters": {"unload_dependents": False}})
    for call, body, message in [
        (index_request, {"ready": 1}, "'ready' must be true or false"),
        (index_request, {"redy": True}, "unknown field(s) redy; accepted: ready"),
        (load_request, {"parameters": []}, "'parameters' must be a JSON object"),
        (unload_request, {"parameters": {"force": True}}, "unknown parameter(s): force"),
        (
            unload_request,
            {"parameters": {"unload_dependents": 1}},
            "'unload_dependents' must be true or false",
        ),
    ]:
        with pytest.raises(InvalidRequest) as caught:
            call(body)  # type: ignore[operator]
        assert caught.value.message == message
