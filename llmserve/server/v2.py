"""The Open Inference Protocol (V2) routes, Triton/MLServer style: server and model metadata, health,
the model repository extension (index, load, unload), over the same registry as /v1.

Names containing `/` work URL-encoded (`org%2Fname`) or as they are. Errors are `{"error": "..."}`
(rendered by server/errors.py). Inference (generate, generate_stream, infer) is in server/v2_infer.py.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from llmserve import __version__
from llmserve.config.runtime import RuntimeModels
from llmserve.errors import Forbidden, InvalidRequest, ModelLoadFailed, Overloaded
from llmserve.models.registry import ModelRegistry
from llmserve.models.status import ModelState, ModelStatus
from llmserve.server.v2_infer import infer_routes, json_object, model_of

EXTENSIONS = ["model_repository", "generate", "metrics"]
PLATFORM = "llmserve_transformers"
TEXT_IN = {"name": "text_input", "datatype": "BYTES", "shape": [1]}
TEXT_OUT = {"name": "text_output", "datatype": "BYTES", "shape": [1]}
# Triton's ModelReadyStateString names
_STATE = {
    ModelState.LOADED: "READY",
    ModelState.LOADING: "LOADING",
    ModelState.UNLOADING: "UNLOADING",
    ModelState.UNLOADED: "UNAVAILABLE",
    ModelState.FAILED: "UNAVAILABLE",
}


def _registry(request: Request) -> ModelRegistry:
    registry: ModelRegistry = request.app.state.registry
    return registry


async def server_metadata(request: Request) -> Response:
    return JSONResponse({"name": "llmserve", "version": __version__, "extensions": EXTENSIONS})


async def live(request: Request) -> Response:
    return JSONResponse({"live": True})


async def ready(request: Request) -> Response:
    """Ready when the server takes requests: models load on demand, so unloaded ones do not count."""
    if _registry(request).draining:
        return JSONResponse({"ready": False}, status_code=503)
    return JSONResponse({"ready": True})


async def model_metadata(request: Request) -> Response:
    status = model_of(request)
    versions = [s.version_label for s in _registry(request).versions(status.api_id)]
    body: dict[str, Any] = {"name": status.api_id, "versions": versions, "platform": PLATFORM}
    body |= {"inputs": [TEXT_IN], "outputs": [TEXT_OUT]}
    if "version" in request.path_params:
        body["versions"] = [status.version_label]
    return JSONResponse(body)


async def model_ready(request: Request) -> Response:
    """200 when this version is loaded, else 400 (as Triton answers)."""
    status = model_of(request)
    body = {"name": status.api_id, "version": status.version_label}
    ok = status.state is ModelState.LOADED
    return JSONResponse({**body, "ready": ok}, status_code=200 if ok else 400)


def index_entry(status: ModelStatus) -> dict[str, str]:
    state = status.state
    reason = ""
    if state is ModelState.UNLOADED:
        reason = "unloaded"
    elif state is ModelState.FAILED:
        reason = status.last_error or "failed"
    return {"name": status.api_id, "version": status.version_label, "state": _STATE[state], "reason": reason}


def _only(body: dict[str, Any], field: str) -> dict[str, Any]:
    """A repository request's body holds `field` and nothing else (a misspelt field is an error)."""
    unknown = sorted(set(body) - {field})
    if unknown:
        raise InvalidRequest(f"unknown field(s) {', '.join(unknown)}; accepted: {field}", param=unknown[0])
    return body


async def repository_index(request: Request) -> Response:
    body = _only(await json_object(request, empty_ok=True), "ready")
    only_ready = body.get("ready", False)
    if not isinstance(only_ready, bool):
        raise InvalidRequest("'ready' must be true or false", param="ready")
    entries = [index_entry(s) for s in _registry(request).statuses()]
    return JSONResponse([e for e in entries if e["state"] == "READY" or not only_ready])


def _parameters(body: dict[str, Any]) -> dict[str, Any]:
    parameters = _only(body, "parameters").get("parameters", {})
    if not isinstance(parameters, dict):
        raise InvalidRequest("'parameters' must be a JSON object", param="parameters")
    return parameters


async def load(request: Request) -> Response:
    """Loads the model's default version (a loaded one is reloaded). With `parameters.config` (a model
    entry, as in the config file), registers or replaces the model first: `--allow-runtime-models`."""
    registry, name = _registry(request), str(request.path_params["name"]).strip("/")
    parameters = _parameters(await json_object(request, empty_ok=True))
    if "config" in parameters:
        runtime: RuntimeModels = request.app.state.runtime
        if not runtime.allowed:
            raise Forbidden("registering models at run time needs --allow-runtime-models")
        status = await registry.register(runtime.model(name, parameters["config"]))
    else:
        status = model_of(request)
        if status.state is ModelState.LOADED:  # loads anew
            await registry.unload(status.unit_id)
    try:
        await registry.load_unit(status.unit_id)
    except (ModelLoadFailed, Overloaded) as exc:
        raise InvalidRequest(f"failed to load '{name}': {exc.message}") from None
    return Response(status_code=200)


async def unload(request: Request) -> Response:
    """Unloads every version of the model (running requests finish first)."""
    api_id = model_of(request).api_id  # 404 for an unknown name
    parameters = _parameters(await json_object(request, empty_ok=True))
    unknown = set(parameters) - {"unload_dependents"}
    if unknown:
        raise InvalidRequest(f"unknown parameter(s): {', '.join(sorted(unknown))}", param="parameters")
    if not isinstance(parameters.get("unload_dependents", False), bool):
        raise InvalidRequest("'unload_dependents' must be true or false", param="unload_dependents")
    await _registry(request).unload_versions(api_id)
    return Response(status_code=200)


def routes() -> list[BaseRoute]:
    model = "/v2/models/{name:path}"
    version = model + "/versions/{version}"
    return [
        Route("/v2", server_metadata, methods=["GET"]),
        Route("/v2/", server_metadata, methods=["GET"]),
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2/repository/index", repository_index, methods=["POST"]),
        Route("/v2/repository/models/{name:path}/load", load, methods=["POST"]),
        Route("/v2/repository/models/{name:path}/unload", unload, methods=["POST"]),
        Route(version + "/ready", model_ready, methods=["GET"]),
        Route(model + "/ready", model_ready, methods=["GET"]),
        *infer_routes(model, version),
        Route(version, model_metadata, methods=["GET"]),
        Route(model, model_metadata, methods=["GET"]),
    ]
