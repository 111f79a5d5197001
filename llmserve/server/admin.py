"""Usage per tenant and the keys file's reload: `GET /v1/usage` (the caller's own tenant), `GET
/admin/usage` (every tenant) and `POST /admin/keys/reload`, the last two for admin keys only. Their bodies
are protocol/usage.py's types (and so is their description in /openapi.json)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from llmserve.config.keys import KeyEntry
from llmserve.errors import ConfigError, InvalidRequest
from llmserve.protocol.usage import KeysReloaded, TenantLimits, UsageReport
from llmserve.server.access import access_of, require_admin
from llmserve.server.quotas import Quotas
from llmserve.server.state import registry_of
from llmserve.server.tenants import KeyStore


def keys_of(request: Request) -> KeyStore:
    store: KeyStore = request.app.state.keys
    return store


def quotas_of(request: Request) -> Quotas:
    quotas: Quotas = request.app.state.quotas
    return quotas


def _limits(entry: KeyEntry | None, quotas: Quotas) -> TenantLimits | None:
    if entry is None:
        return None
    limits = entry.limits
    return TenantLimits(
        requests_per_minute=limits.requests_per_minute,
        tokens_per_minute=limits.tokens_per_minute,
        max_concurrent=limits.max_concurrent,
        in_flight=quotas.in_flight(entry.name),
    )


def _report(request: Request, names: list[str] | None) -> Response:
    store, quotas = keys_of(request), quotas_of(request)
    body = registry_of(request).usage.report(names)
    for name, tenant in body["tenants"].items():
        tenant["limits"] = _limits(store.entry(name), quotas)
    return JSONResponse(UsageReport.model_validate(body).model_dump())


async def own_usage(request: Request) -> Response:
    """The caller's tenant: requests and tokens over the last minute, hour and since start, per model."""
    return _report(request, [access_of(request).name])


async def all_usage(request: Request) -> Response:
    require_admin(request)
    return _report(request, None)


async def reload_keys(request: Request) -> Response:
    """Reads the keys file again; a bad file is a 400 and the keys in force stay."""
    require_admin(request)
    try:
        keys = keys_of(request).reload()
    except ConfigError as exc:
        raise InvalidRequest(f"{exc}; the previous keys stay in force") from None
    body = KeysReloaded(object="keys", source=keys.source or "", tenants=keys.names())
    return JSONResponse(body.model_dump())


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/usage", own_usage, methods=["GET"]),
        Route("/admin/usage", all_usage, methods=["GET"]),
        Route("/admin/keys/reload", reload_keys, methods=["POST"]),
    ]
