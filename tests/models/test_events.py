"""GET /v1/models/events: every state change of every model, in order, with its reason, as SSE."""

from __future__ import annotations

from typing import Any

import httpx
from app_calls import HELLO, watching
from fakes import Factory, ScriptedEngine
from model_configs import config
from servers import live_server

from llmserve.server import create_app


def brief(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(e["model"], e["previous"], e["state"], e["status"], e.get("reason")) for e in events]


def test_load_unload_keep_alive_and_failure_events_in_order() -> None:
    factory = Factory(lambda c: ScriptedEngine(["a", "b"]))
    app = create_app([config(float("inf"), "m"), config(0, "k")], "m", factory=factory, preload="none")
    with live_server(app) as base:
        thread, events = watching(base, 8)
        assert httpx.post(f"{base}/v1/chat/completions", json=HELLO).status_code == 200
        assert httpx.post(f"{base}/v1/models/unload", json={"model_id": "m"}).status_code == 200
        assert httpx.post(f"{base}/v1/chat/completions", json={**HELLO, "model": "k"}).status_code == 200
        thread.join(10)
        assert brief(events) == [
            ("m", "unloaded", "loading", "reloading", None),
            ("m", "loading", "loaded", "loaded", None),
            ("m", "loaded", "unloading", "loaded", "unload"),
            ("m", "unloading", "unloaded", "unloaded", "unload"),
            ("k", "unloaded", "loading", "reloading", None),
            ("k", "loading", "loaded", "loaded", None),
            ("k", "loaded", "unloading", "loaded", "keep_alive"),
            ("k", "unloading", "unloaded", "unloaded", "keep_alive"),
        ]
        assert events[1]["memory_bytes"] == 1000
        assert all(isinstance(e["time"], float) for e in events)
        factory.fail_with = RuntimeError("disk on fire")
        thread, events = watching(base, 2)
        assert httpx.post(f"{base}/v1/chat/completions", json=HELLO).status_code == 500
        thread.join(10)
        assert brief(events) == [
            ("m", "unloaded", "loading", "reloading", None),
            ("m", "loading", "failed", "internal_error", "load_failed"),
        ]
        assert events[1]["error"] == "RuntimeError: disk on fire"


def test_events_route_is_not_a_model_id() -> None:
    factory = Factory(lambda c: ScriptedEngine(["a"]))
    app = create_app([config(float("inf"), "m")], "m", factory=factory, preload="none")
    with live_server(app) as base:
        thread, events = watching(base, 1)
        assert httpx.get(f"{base}/v1/models/m").status_code == 200
        assert httpx.post(f"{base}/v1/models/reload", json={"model_id": "m"}).status_code == 200
        thread.join(10)
        assert brief(events) == [("m", "unloaded", "loading", "reloading", None)]
