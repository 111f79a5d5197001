"""V2 inference on a chat model: Triton's generate extension (`/generate`, `/generate_stream` as SSE) and
KServe's `/infer` with a BYTES `text_input` tensor. The text is the user's message: the model answers it
through its chat template. Generation parameters: max_tokens, temperature, top_p, top_k, seed, stop;
those left out get the model's sampling defaults, as on /v1. An unloaded model is loaded first, as on /v1."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from sse_starlette import EventSourceResponse
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from llmserve.engine.base import ChatMessage, GenerationParams
from llmserve.errors import InternalError, InvalidRequest, LLMServeError
from llmserve.models.jobs import EventStream, Failed, Finished, Started, TextDelta
from llmserve.models.registry import ModelRegistry
from llmserve.models.status import ModelStatus
from llmserve.protocol.base import INT64_MAX
from llmserve.server.body import read_json
from llmserve.service.chat import RequestStats

PARAMETERS = ("max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "stream")
_DEFAULTED = ("max_tokens", "temperature", "top_p", "top_k", "min_p", "repetition_penalty")


def params_of(parameters: Any) -> GenerationParams:
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

    if not isinstance(parameters.get("stream", False), bool):
        raise InvalidRequest("parameters.stream must be true or false", param="stream")

    stop = parameters.get("stop", [])
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise InvalidRequest("parameters.stop must be a string or a list of strings", param="stop")
    max_tokens = whole("max_tokens")
    return GenerationParams(
        max_tokens=max_tokens or None,
        temperature=number("temperature", 1.0, 0, 2),
        top_p=number("top_p", 1.0, 0, 1),
        top_k=whole("top_k") or 0,
        seed=whole("seed"),
        stop=tuple(stop),
        # what the request leaves out gets the model's default (min_p and repetition_penalty always)
        omitted=frozenset(name for name in _DEFAULTED if name not in parameters),
    )


def model_of(request: Request) -> ModelStatus:
    """The model named in the path, at the path's version, else its default version; 404 when either
    is unknown."""
    registry: ModelRegistry = request.app.state.registry
    return registry.version(str(request.path_params["name"]).strip("/"), request.path_params.get("version"))


async def _start(request: Request, text: Any, parameters: Any) -> tuple[ModelStatus, EventStream]:
    if not isinstance(text, str) or not text:
        raise InvalidRequest("'text_input' must be a non-empty string", param="text_input")
    params = params_of(parameters)
    status = model_of(request)
    registry: ModelRegistry = request.app.state.registry
    _, stream = registry.generate(status.unit_id, [ChatMessage("user", text)], params)
    stats: RequestStats = request.state.stats
    stats.model = status.unit_id
    try:
        event = await stream.get()
    except BaseException:
        stream.cancel()
        raise
    stats.observe(event)
    if isinstance(event, Failed):
        raise event.error
    if not isinstance(event, Started):
        stream.cancel()
        raise InternalError(f"unexpected first event {type(event).__name__}")
    return status, stream


async def _text(stream: EventStream, stats: RequestStats) -> str:
    parts: list[str] = []
    try:
        async for event in stream.until_done():
            stats.observe(event)
            if isinstance(event, TextDelta):
                parts.append(event.text)
            elif isinstance(event, Failed):
                raise event.error
    finally:
        stream.cancel()
    return "".join(parts)


async def json_object(request: Request, *, empty_ok: bool = False) -> dict[str, Any]:
    """The body as a JSON object (`empty_ok`: an empty body is `{}`)."""
    if empty_ok and not (await request.body()).strip():
        return {}
    body = await read_json(request)
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    return body


def _names(status: ModelStatus) -> dict[str, str]:
    return {"model_name": status.api_id, "model_version": status.version_label}


async def generate(request: Request) -> Response:
    body = await json_object(request)
    status, stream = await _start(request, body.get("text_input"), body.get("parameters"))
    text = await _text(stream, request.state.stats)
    return JSONResponse({**_names(status), "text_output": text})


async def generate_stream(request: Request) -> Response:
    """SSE: one `data: {"model_name", "model_version", "text_output"}` per piece of text, the last with
    `finish_reason`; an error after the start is a `data: {"error": ...}` event."""
    body = await json_object(request)
    status, stream = await _start(request, body.get("text_input"), body.get("parameters"))
    stats: RequestStats = request.state.stats

    async def events() -> AsyncIterator[dict[str, str]]:
        try:
            async for event in stream.until_done():
                stats.observe(event)
                if isinstance(event, TextDelta):
                    yield _data({**_names(status), "text_output": event.text})
                elif isinstance(event, Finished):
                    yield _data({**_names(status), "text_output": "", "finish_reason": event.reason})
                elif isinstance(event, Failed):
                    yield _data({"error": event.error.message})
        except LLMServeError as exc:
            yield _data({"error": exc.message})
        finally:
            stream.cancel()

    return EventSourceResponse(events(), sep="\n", headers={"Cache-Control": "no-cache"})


def _data(payload: dict[str, Any]) -> dict[str, str]:
    return {"data": json.dumps(payload, ensure_ascii=False, separators=(",", ":"))}


async def infer(request: Request) -> Response:
    """KServe V2 inference: `inputs` holds a BYTES tensor `text_input` of one string; the answer is the
    BYTES tensor `text_output`. Generation parameters go in the request's `parameters`."""
    body = await json_object(request)
    inputs = body.get("inputs")
    if not isinstance(inputs, list):
        raise InvalidRequest("'inputs' must be a list of tensors", param="inputs")
    found = [i for i in inputs if isinstance(i, dict) and i.get("name") == "text_input"]
    if len(found) != 1 or found[0].get("datatype") != "BYTES":
        raise InvalidRequest("'inputs' needs one BYTES tensor named text_input", param="inputs")
    data = found[0].get("data")
    if not isinstance(data, list) or len(data) != 1:
        raise InvalidRequest("text_input takes one string (shape [1])", param="inputs")
    status, stream = await _start(request, data[0], body.get("parameters"))
    text = await _text(stream, request.state.stats)
    output = {"name": "text_output", "datatype": "BYTES", "shape": [1], "data": [text]}
    answer: dict[str, Any] = _names(status)
    if isinstance(body.get("id"), str):
        answer["id"] = body["id"]
    return JSONResponse({**answer, "outputs": [output]})


def infer_routes(model: str, version: str) -> list[BaseRoute]:
    routes: list[BaseRoute] = []
    for prefix in (version, model):
        routes += [
            Route(prefix + "/generate", generate, methods=["POST"]),
            Route(prefix + "/generate_stream", generate_stream, methods=["POST"]),
            Route(prefix + "/infer", infer, methods=["POST"]),
        ]
    return routes
