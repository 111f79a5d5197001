"""ServerOptions: what the HTTP layer enforces on every route. A leaf (no Starlette), so the CLI can
build it without importing the server."""

from __future__ import annotations

from dataclasses import dataclass

from llmserve.config.keys import Keys


@dataclass(frozen=True)
class ServerOptions:
    api_keys: tuple[str, ...] = ()  # all-powerful keys (--api-key)
    keys: Keys | None = None  # the keys file's tenants (--keys), read again on SIGHUP or on request
    cors_origins: tuple[str, ...] = ()
    max_request_bytes: int = 16 * 2**20
    shutdown_timeout: float = 30.0  # seconds running requests may take to finish once SIGTERM came
    allow_remote_images: bool = False  # http(s) image URLs in chat messages, fetched by the server
    responses_store_size: int = 1000  # stored Responses API responses (0: none is kept)
    responses_store_ttl: float = 3600.0  # seconds a stored response is kept
    ui: bool = True  # the dashboard at /ui (--no-ui: off)
    open_metrics: bool = False  # GET /metrics without an API key (for scrapers that send none)
