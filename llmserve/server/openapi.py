"""/openapi.json: llmserve's own /v1 API as an OpenAPI 3.1 document, generated from the pydantic wire
types (the V2 routes follow KServe's and Triton's documents: docs/v2.md).

The parameters llmserve accepts only in their neutral form (`n`, `tools`, ...) are described by exactly
those values, so the document says what the server accepts.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from llmserve import __version__
from llmserve.protocol.base import ErrorResponse, Health
from llmserve.protocol.figures import Figures
from llmserve.protocol.model_management import (
    ModelCard,
    ModelIdRequest,
    ModelList,
    ModelStatusResponse,
    PromoteRequest,
    PromoteResponse,
)
from llmserve.protocol.openai_chat import UNSUPPORTED_UNLESS, ChatCompletion, ChatCompletionRequest
from llmserve.protocol.usage import KeysReloaded, UsageReport

_REF = "#/components/schemas/{model}"
_ERRORS = {
    "400": "invalid body or parameter",
    "401": "missing or wrong API key",
    "403": "the key lacks the right: model_not_allowed or admin_required (docs/tenants.md)",
    "404": "unknown model or route",
    "405": "method not allowed",
    "413": "request body too large",
    "500": "the model failed to load or to generate",
    "503": "shutting down (with Retry-After)",
}


# One server-sent event: `data` is a chat.completion.chunk, an error object, or `[DONE]`.
_SSE_EVENT = {"type": "object", "required": ["data"], "properties": {"data": {"type": "string"}}}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


def _json(model: type[BaseModel]) -> dict[str, Any]:
    return {"application/json": {"schema": _ref(model)}}


def _responses(ok: dict[str, Any], errors: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {"200": {"description": "success", "content": ok}}
    for status in ("401", "405", "413", *errors):
        out[status] = {"description": _ERRORS[status], "content": _json(ErrorResponse)}
    return out


def _body(model: type[BaseModel]) -> dict[str, Any]:
    return {"required": True, "content": _json(model)}


def _schemas() -> dict[str, Any]:
    pairs: list[tuple[type[BaseModel], Any]] = [
        (ChatCompletionRequest, "validation"),
        (ModelIdRequest, "validation"),
        (PromoteRequest, "validation"),
        *(
            (m, "serialization")
            for m in (
                ChatCompletion,
                ModelList,
                ModelCard,
                ModelStatusResponse,
                PromoteResponse,
                ErrorResponse,
                Health,
                Figures,
                UsageReport,
                KeysReloaded,
            )
        ),
    ]
    _, top = models_json_schema(pairs, ref_template=_REF)
    schemas: dict[str, Any] = top["$defs"]
    properties = schemas["ChatCompletionRequest"]["properties"]
    for name, neutral in UNSUPPORTED_UNLESS.items():
        properties[name] = {"enum": list(neutral)}
    return schemas


def openapi_document() -> dict[str, Any]:
    management = {
        "post": {
            "requestBody": _body(ModelIdRequest),
            "responses": _responses(_json(ModelStatusResponse), ("400", "403", "404", "500", "503")),
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "llmserve", "version": __version__},
        "paths": {
            "/health": {"get": {"responses": {"200": {"description": "up", "content": _json(Health)}}}},
            "/v1/chat/completions": {
                "post": {
                    "requestBody": _body(ChatCompletionRequest),
                    "responses": _responses(
                        {**_json(ChatCompletion), "text/event-stream": {"schema": _SSE_EVENT}},
                        ("400", "403", "404", "500", "503"),
                    ),
                }
            },
            "/v1/models": {"get": {"responses": _responses(_json(ModelList), ())}},
            "/v1/models/{model_id}": {
                "get": {
                    "parameters": [
                        {"name": "model_id", "in": "path", "required": True, "schema": {"type": "string"}}
                    ],
                    "responses": _responses(_json(ModelCard), ("403", "404")),
                }
            },
            "/v1/models/unload": management,
            "/v1/models/reload": management,
            "/v1/models/status": management,
            "/v1/figures": {"get": {"responses": _responses(_json(Figures), ())}},
            "/v1/usage": {"get": {"responses": _responses(_json(UsageReport), ())}},
            "/admin/usage": {"get": {"responses": _responses(_json(UsageReport), ("403",))}},
            "/admin/keys/reload": {"post": {"responses": _responses(_json(KeysReloaded), ("400", "403"))}},
            "/v1/models/promote": {
                "post": {
                    "requestBody": _body(PromoteRequest),
                    "responses": _responses(_json(PromoteResponse), ("400", "403", "404", "500", "503")),
                }
            },
        },
        "components": {"schemas": _schemas()},
    }


async def openapi_json(request: Request) -> Response:
    return JSONResponse(openapi_document())
