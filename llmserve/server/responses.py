"""The OpenAI Responses API routes: create (whole or streamed), retrieve, delete, input items."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from llmserve.protocol.base import parse_request
from llmserve.protocol.openai_responses import ItemsQuery, ResponsesRequest
from llmserve.server.access import access_of
from llmserve.server.body import read_json
from llmserve.server.openai import answer
from llmserve.server.sse import named_sse_response
from llmserve.server.state import responses_of


async def create_response(request: Request) -> Response:
    body = parse_request(ResponsesRequest, await read_json(request))
    return await answer(request, responses_of(request), body, body.stream, named_sse_response)


def owner_of(request: Request) -> str | None:
    """Whose stored responses the request may see: its tenant's (None on a server without keys)."""
    tenant = access_of(request).tenant
    return None if tenant is None else tenant.name


async def get_response(request: Request) -> Response:
    return JSONResponse(responses_of(request).get(request.path_params["response_id"], owner_of(request)))


async def delete_response(request: Request) -> Response:
    return JSONResponse(responses_of(request).delete(request.path_params["response_id"], owner_of(request)))


async def list_input_items(request: Request) -> Response:
    params = request.query_params
    query: dict[str, object] = {k: v for k, v in params.items() if k not in ("limit", "include", "include[]")}
    if "limit" in params:
        query["limit"] = int(params["limit"]) if params["limit"].isdigit() else params["limit"]
    includes = params.getlist("include") + params.getlist("include[]")
    if includes:
        query["include"] = includes
    parsed = parse_request(ItemsQuery, query)
    service = responses_of(request)
    listing = service.input_items(
        request.path_params["response_id"], owner_of(request), parsed.limit, parsed.order, parsed.after
    )
    return JSONResponse(listing)


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/responses", create_response, methods=["POST"]),
        Route("/v1/responses/{response_id}", get_response, methods=["GET"]),
        Route("/v1/responses/{response_id}", delete_response, methods=["DELETE"]),
        Route("/v1/responses/{response_id}/input_items", list_input_items, methods=["GET"]),
    ]
