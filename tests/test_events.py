"""GET /v1/models/events: every state change of every model, in order, with its reason, as SSE."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
from conftest import live_server
from fakes import Factory, ScriptedEngine
from test_keep_alive import HELLO, config

from llmserve.server import create_app


def collect(
    base: str,
    count: int,
    into: list[dict[str, Any]],
    ready: threading.Event,
    kind_wanted: str = "model_state",
) -> None:
    with httpx.stream("GET", f"{base}/v1/models/events", timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in response.iter_lines():
            if line.startswith(": subscribed"):
                ready.set()
            elif line.startswith("event: "):
                kind = line[len("event: ") :]
            elif line.startswith("data: ") and kind == kind_wanted:
                into.append(json.loads(line[len("data: ") :]))
                if len(into) == count:
                    return


def watching(
    base: str, count: int, kind: str = "model_state"
) -> tuple[threading.Thread, list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    ready = threading.Event()
    thread = threading.Thread(target=collect, args=(base, count, events, ready, kind), daemon=True)
    thread.start()
    assert ready.wait(10)
    return thread, events


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
