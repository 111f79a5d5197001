"""Who a request is: the API key middleware, the keys in force, and what a key may do.

With `--api-key` keys or a keys file (`--keys`), every path outside the open ones needs a key
(`Authorization: Bearer KEY` or `x-api-key: KEY`). An `--api-key` key may do everything; a keys file
entry names a tenant: the models it may use, its quotas (server/quotas.py), its share of busy models, and
whether it is an admin. The middleware puts the request's `Access` on its scope and the tenant on its
`RequestStats` (which the services pass into the generation jobs and the access log prints), refuses a
request over its key's quotas with a 429, and adds the key's `x-ratelimit-*` headers to every response.

A reload (SIGHUP, `POST /admin/keys/reload`) swaps the keys file's entries in one assignment: a removed
key is refused from its next request on, and what it has running finishes. Quota counters are kept by
tenant name, in memory: they survive a reload, not a restart.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmserve.config.keys import API_KEY_TENANT, KeyEntry, Keys, digest, load_keys, match
from llmserve.errors import ConfigError, InvalidAPIKey, RateLimited
from llmserve.models.usage import Usage
from llmserve.server.access import NOBODY, OPEN, Access
from llmserve.server.errors import error_response
from llmserve.server.quotas import Quotas

log = logging.getLogger(__name__)
HINT = "send it as 'Authorization: Bearer KEY' or 'x-api-key: KEY'"
RATE_LIMIT_HEADERS = tuple(
    f"x-ratelimit-{what}-{kind}"
    for kind in ("requests", "tokens")
    for what in ("limit", "remaining", "reset")
)


class KeyStore:
    """The keys taken now: `--api-key`'s and the keys file's (`keys`, replaced whole by `reload`)."""

    def __init__(self, api_keys: Sequence[str] = (), keys: Keys | None = None) -> None:
        self._api = [digest(key) for key in api_keys]
        self.keys = keys

    @property
    def enabled(self) -> bool:
        return bool(self._api) or self.keys is not None

    def identify(self, given: str) -> Access | None:
        """The access of the key `given`, or None (compared as hashes, in constant time, every key)."""
        keys = self.keys  # one read: a reload meanwhile cannot mix two files
        entries = () if keys is None else keys.entries
        index = match(given, [*self._api, *(entry.digest for entry in entries)])
        if index is None:
            return None
        if index < len(self._api):
            return Access(API_KEY_TENANT, admin=True)
        entry = entries[index - len(self._api)]
        return Access(entry.tenant, entry.admin, entry)

    def entry(self, name: str) -> KeyEntry | None:
        keys = self.keys
        return next((e for e in keys.entries if e.name == name), None) if keys is not None else None

    def reload(self) -> Keys:
        """Reads the keys file again; on any problem (a `ConfigError`) the keys in force stay."""
        source = None if self.keys is None else self.keys.source
        if source is None:
            raise ConfigError("the server was started without a keys file (--keys): nothing to reload")
        self.keys = load_keys(source)
        log.info("keys file %s reloaded: %d tenant(s)", source, len(self.keys.entries))
        return self.keys

    def reload_logged(self) -> None:
        """SIGHUP's reload: a bad file is logged, and the keys in force stay."""
        try:
            self.reload()
        except ConfigError as exc:
            log.error("keys file not reloaded, the previous keys stay in force: %s", exc)


class TenantMiddleware:
    def __init__(
        self, app: ASGIApp, store: KeyStore, quotas: Quotas, usage: Usage, open_paths: frozenset[str]
    ) -> None:
        self.app = app
        self.store = store
        self.quotas = quotas
        self.usage = usage
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        if scope["path"] in self.open_paths:
            state["access"] = NOBODY if self.store.enabled else OPEN
            await self.app(scope, receive, send)
            return
        access = OPEN
        if self.store.enabled:
            headers = Headers(scope=scope)
            scheme, _, token = headers.get("authorization", "").partition(" ")
            given = token.strip() if scheme.lower() == "bearer" else headers.get("x-api-key", "")
            found = self.store.identify(given) if given else None
            if found is None:
                why = "no API key was given" if not given else "the API key is not valid"
                error = InvalidAPIKey(f"{why}: {HINT}")
                await error_response(error, scope["path"])(scope, receive, send)
                return
            access = found
        state["access"] = access
        stats = state.get("stats")
        if stats is not None:
            stats.tenant = access.tenant
        await self._metered(access, scope, receive, send)

    async def _metered(self, access: Access, scope: Scope, receive: Receive, send: Send) -> None:
        """Runs the request within its key's quotas, counting it and its outcome."""
        entry = access.entry
        limited = entry is not None and entry.limits.any

        async def send_counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                if message["status"] in (403, 429):
                    self.usage.rejected(access.name, message["status"])
                if entry is not None and limited:
                    headers = MutableHeaders(scope=message)
                    for name, value in self.quotas.headers(entry):
                        headers.append(name, value)
            await send(message)

        try:
            if entry is not None:
                self.quotas.begin(entry)
            else:
                self.usage.request(access.name)
        except RateLimited as exc:
            await error_response(exc, scope["path"])(scope, receive, send_counted)
            return
        try:
            await self.app(scope, receive, send_counted)
        finally:
            if entry is not None:
                self.quotas.end(entry)
            stats = scope["state"].get("stats")
            if stats is not None and stats.model is not None:
                self.usage.model_request(access.name, stats.model)
