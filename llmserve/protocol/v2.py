"""The Open Inference Protocol (V2) on the wire, as Triton, MLServer and KServe speak it: what the
server and model metadata hold, the request bodies of generate / infer and of the repository extension,
each parsed into a frozen value with a 400 naming the field that is wrong.

Text models take one BYTES tensor `text_input` and answer `text_output` (Triton's generate extension
and KServe's `/infer`). Generation parameters: max_tokens, temperature, top_p, top_k, seed, stop and
(generate_stream only) stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from llmserve.errors import InvalidRequest
from llmserve.protocol.base import INT64_MAX

EXTENSIONS = ("model_repository", "generate", "metrics")
PLATFORM = "llmserve_transformers"
PARAMETERS = ("max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "stream")

# Triton's ModelReadyStateString names
ReadyState = Literal["READY", "LOADING", "UNLOADING", "UNAVAILABLE"]


class Tensor(TypedDict):
    name: str
    datatype: str
    shape: list[int]


TEXT_IN: Tensor = {"name": "text_input", "datatype": "BYTES", "shape": [1]}
TEXT_OUT: Tensor = {"name": "text_output", "datatype": "BYTES", "shape": [1]}


class IndexEntry(TypedDict):
    name: str
    version: str
    state: ReadyState
    reason: str


@dataclass(frozen=True)
class TextParameters:
    """Generation parameters as the request gave them; `given` names those it set."""

    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stream: bool = False
    given: frozenset[str] = frozenset()


@dataclass(frozen=True)
class TextRequest:
    """One text to answer (generate, generate_stream and infer), its parameters, and infer's `id`."""

    text: str
    parameters: TextParameters
    id: str | None = None


def object_body(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    return body


def text_parameters(parameters: Any) -> TextParameters:
    if parameters is None:
        parameters = {}
    if not isinstance(parameters, dict):
        raise InvalidRequest("'parameters' must be a JSON object", param="parameters")
    unknown = sorted(set(parameters) - set(PARAMETERS))
    if unknown:
        raise InvalidRequest(
            f"unknown parameter(s) {', '.join(unknown)}; accepted: {', '.join(PARAMETERS)}",
            param="parameters",
        )

    def number(key: str, default: float, low: float, high: float) -> float:
        value = parameters.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            raise InvalidRequest(f"parameters.{key} must be a number from {low:g} to {high:g}", param=key)
        return float(value)

    def whole(key: str) -> int | None:
        value = parameters.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise InvalidRequest(f"parameters.{key} must be a whole number (0 or more)", param=key)
        if value is not None and value > INT64_MAX:  # a seed beyond the engine's generator
            message = f"parameters.{key} must be a whole number (0 or more) below 2**63"
            raise InvalidRequest(message, param=key)
        return value

    stream = parameters.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequest("parameters.stream must be true or false", param="stream")
    stop = parameters.get("stop", [])
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise InvalidRequest("parameters.stop must be a string or a list of strings", param="stop")
    return TextParameters(
        max_tokens=whole("max_tokens") or None,
        temperature=number("temperature", 1.0, 0, 2),
        top_p=number("top_p", 1.0, 0, 1),
        top_k=whole("top_k") or 0,
        seed=whole("seed"),
        stop=tuple(stop),
        stream=stream,
        given=frozenset(parameters),
    )


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidRequest("'text_input' must be a non-empty string", param="text_input")
    return value


def generate_request(body: Any) -> TextRequest:
    """Triton's generate extension: `{"text_input": "...", "parameters": {...}}`."""
    body = object_body(body)
    text = _text(body.get("text_input"))
    return TextRequest(text, text_parameters(body.get("parameters")))


def infer_request(body: Any) -> TextRequest:
    """KServe V2 inference: `inputs` holds a BYTES tensor `text_input` of one string."""
    body = object_body(body)
    inputs = body.get("inputs")
    if not isinstance(inputs, list):
        raise InvalidRequest("'inputs' must be a list of tensors", param="inputs")
    found = [i for i in inputs if isinstance(i, dict) and i.get("name") == "text_input"]
    if len(found) != 1 or found[0].get("datatype") != "BYTES":
        raise InvalidRequest("'inputs' needs one BYTES tensor named text_input", param="inputs")
    data = found[0].get("data")
    if not isinstance(data, list) or len(data) != 1:
        raise InvalidRequest("text_input takes one string (shape [1])", param="inputs")
    text = _text(data[0])
    request_id = body.get("id")
    return TextRequest(
        text, text_parameters(body.get("parameters")), request_id if isinstance(request_id, str) else None
    )


def _only(body: dict[str, Any], field: str) -> dict[str, Any]:
    """A repository request's body holds `field` and nothing else (a misspelt field is an error)."""
    unknown = sorted(set(body) - {field})
    if unknown:
        raise InvalidRequest(f"unknown field(s) {', '.join(unknown)}; accepted: {field}", param=unknown[0])
    return body


def index_request(body: Any) -> bool:
    """`POST /v2/repository/index` `{"ready": bool}`: whether only ready models are listed."""
    only_ready = _only(object_body(body), "ready").get("ready", False)
    if not isinstance(only_ready, bool):
        raise InvalidRequest("'ready' must be true or false", param="ready")
    return only_ready


def _parameters(body: Any) -> dict[str, Any]:
    parameters = _only(object_body(body), "parameters").get("parameters", {})
    if not isinstance(parameters, dict):
        raise InvalidRequest("'parameters' must be a JSON object", param="parameters")
    return parameters


@dataclass(frozen=True)
class LoadRequest:
    """`POST .../load` `{"parameters": {"config": {...}}}`: with `config`, a model entry to register
    (or to replace the model with) before loading it."""

    registers: bool = False
    config: Any = None


def load_request(body: Any) -> LoadRequest:
    parameters = _parameters(body)
    return LoadRequest("config" in parameters, parameters.get("config"))


def unload_request(body: Any) -> None:
    """`POST .../unload` `{"parameters": {"unload_dependents": bool}}`: accepted (no model depends on
    another here), checked so that a misspelt field is an error."""
    parameters = _parameters(body)
    unknown = set(parameters) - {"unload_dependents"}
    if unknown:
        raise InvalidRequest(f"unknown parameter(s): {', '.join(sorted(unknown))}", param="parameters")
    if not isinstance(parameters.get("unload_dependents", False), bool):
        raise InvalidRequest("'unload_dependents' must be true or false", param="unload_dependents")
