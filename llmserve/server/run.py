"""Runs the app under uvicorn with a graceful drain: on SIGTERM or SIGINT new requests get a 503,
running ones may finish for `shutdown_timeout` seconds, then the rest end with an error. SIGHUP reads the
keys file again (server/tenants.py)."""

from __future__ import annotations

import math
import signal
from types import FrameType

import uvicorn
from starlette.applications import Starlette

from llmserve.models.registry import ModelRegistry
from llmserve.server.options import ServerOptions
from llmserve.server.tenants import KeyStore


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, registry: ModelRegistry, shutdown_timeout: float) -> None:
        super().__init__(config)
        self._registry = registry
        self._shutdown_timeout = shutdown_timeout

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.should_exit:
            self._registry.begin_drain(self._shutdown_timeout)
        super().handle_exit(sig, frame)


def serve(app: Starlette, *, host: str, port: int, log_level: str) -> None:
    options: ServerOptions = app.state.options
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        # uvicorn's own limit comes after the drain's, which ends every request in time
        timeout_graceful_shutdown=math.ceil(options.shutdown_timeout) + 10,
    )
    keys: KeyStore = app.state.keys
    if hasattr(signal, "SIGHUP"):  # not on Windows
        signal.signal(signal.SIGHUP, lambda signum, frame: keys.reload_logged())
    DrainingServer(config, app.state.registry, options.shutdown_timeout).run()
