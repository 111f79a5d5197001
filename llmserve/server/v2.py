"""The Open Inference Protocol (V2) routes, Triton/MLServer style: server and model metadata, health,
the model repository extension (index, load, unload) and text inference (generate, generate_stream,
infer). Each route parses its body (protocol/v2.py), calls the V2 service and renders the answer.

Names containing `/` work URL-encoded (`org%2Fname`) or as they are. Errors are `{"error": "..."}`
(rendered by server/errors.py).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from llmserve.models.status import ModelState, ModelStatus
from llmserve.protocol.v2 import generate_request, index_request, infer_request, load_request, unload_request
from llmserve.server.access import access_of, check_model, check_name, require_admin
from llmserve.server.body import read_json
from llmserve.server.sse import event_source, json_events
from llmserve.server.state import options_of, stats_of, v2_of
from llmserve.service.v2 import names, server_metadata


async def _body(request: Request, *, empty_ok: bool = False) -> Any:
    """The body as JSON (`empty_ok`: an empty body is `{}`)."""
    if empty_ok and not (await request.body()).strip():
        return {}
    return await read_json(request)


def _name(request: Request) -> str:
    return str(request.path_params["name"]).strip("/")


def _model(request: Request) -> ModelStatus:
    """The model in the path, at the path's version, else its default version; 404 when unknown, 403
    when the request's key may not use it."""
    name = _name(request)
    return check_model(request, v2_of(request).model(name, request.path_params.get("version")), name)


async def metadata(request: Request) -> Response:
    return JSONResponse(server_metadata())


async def live(request: Request) -> Response:
    return JSONResponse({"live": True})


async def ready(request: Request) -> Response:
    ok = v2_of(request).ready()
    return JSONResponse({"ready": ok}, status_code=200 if ok else 503)


async def model_metadata(request: Request) -> Response:
    _model(request)
    return JSONResponse(v2_of(request).metadata(_name(request), request.path_params.get("version")))


async def model_ready(request: Request) -> Response:
    """200 when this version is loaded, else 400 (as Triton answers)."""
    status = _model(request)
    ok = status.state is ModelState.LOADED
    body = {"name": status.api_id, "version": status.version_label, "ready": ok}
    return JSONResponse(body, status_code=200 if ok else 400)


async def repository_index(request: Request) -> Response:
    only_ready = index_request(await _body(request, empty_ok=True))
    return JSONResponse(v2_of(request).index(only_ready, access_of(request).may_use))


async def load(request: Request) -> Response:
    """Loads the model's default version (a loaded one anew); with `parameters.config`, registers or
    replaces the model first (`--allow-runtime-models`). Admin keys only, of that model's name."""
    require_admin(request)
    check_name(request, _name(request))
    body = load_request(await _body(request, empty_ok=True))
    await v2_of(request).load(_name(request), body)
    return Response(status_code=200)


async def unload(request: Request) -> Response:
    """Unloads every version of the model (running requests finish first). Admin keys only."""
    require_admin(request)
    api_id = _model(request).api_id  # 404 for an unknown name
    unload_request(await _body(request, empty_ok=True))
    await v2_of(request).unload(api_id)
    return Response(status_code=200)


async def generate(request: Request) -> Response:
    body = generate_request(await _body(request))
    status = _model(request)
    text = await v2_of(request).generate(status, body, stats_of(request))
    return JSONResponse({**names(status), "text_output": text})


async def generate_stream(request: Request) -> Response:
    """SSE: one `data: {"model_name", "model_version", "text_output"}` per piece of text, the last with
    `finish_reason`; an error after the start is a `data: {"error": ...}` event."""
    body = generate_request(await _body(request))
    status = _model(request)
    pieces = await v2_of(request).open_stream(status, body, stats_of(request))
    return event_source(json_events(pieces), options_of(request).shutdown_timeout + 5)


async def infer(request: Request) -> Response:
    """KServe V2 inference: the BYTES tensor `text_input` in, `text_output` out."""
    body = infer_request(await _body(request))
    status = _model(request)
    return JSONResponse(await v2_of(request).infer(status, body, stats_of(request)))


def routes() -> list[BaseRoute]:
    model = "/v2/models/{name:path}"
    version = model + "/versions/{version}"
    inference = []
    for prefix in (version, model):
        inference += [
            Route(prefix + "/generate", generate, methods=["POST"]),
            Route(prefix + "/generate_stream", generate_stream, methods=["POST"]),
            Route(prefix + "/infer", infer, methods=["POST"]),
        ]
    return [
        Route("/v2", metadata, methods=["GET"]),
        Route("/v2/", metadata, methods=["GET"]),
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2/repository/index", repository_index, methods=["POST"]),
        Route("/v2/repository/models/{name:path}/load", load, methods=["POST"]),
        Route("/v2/repository/models/{name:path}/unload", unload, methods=["POST"]),
        Route(version + "/ready", model_ready, methods=["GET"]),
        Route(model + "/ready", model_ready, methods=["GET"]),
        *inference,
        Route(version, model_metadata, methods=["GET"]),
        Route(model, model_metadata, methods=["GET"]),
    ]
