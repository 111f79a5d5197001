"""The small requests the tests send an app (a TestClient or a live server's base URL): a chat, a model's
status, a stream in the background, the V2 repository index, and the /v1/models/events stream."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
import jsonschema
from starlette.testclient import TestClient

HELLO = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
# Triton extension_model_repository.md: index entries and their states (ModelReadyStateString)
INDEX_SCHEMA = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "state": {"enum": ["UNKNOWN", "READY", "UNAVAILABLE", "LOADING", "UNLOADING"]},
            "reason": {"type": "string"},
        },
        "required": ["name", "version", "state", "reason"],
        "additionalProperties": False,
    },
}


def status(client: TestClient, model: str = "m") -> str:
    return str(client.post("/v1/models/status", json={"model_id": model}).json()["status"])


def ask(client: TestClient, model: str, **body: Any) -> httpx.Response:
    return client.post("/v1/chat/completions", json={**HELLO, "model": model, **body})


def stream_in_background(client: TestClient, model: str, results: list[Any]) -> threading.Thread:
    def run() -> None:
        with client.stream(
            "POST", "/v1/chat/completions", json={**HELLO, "model": model, "max_tokens": 4, "stream": True}
        ) as response:
            results.append((model, response.status_code, response.read().decode()))

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def index(base: str, **body: Any) -> list[dict[str, str]]:
    response = httpx.post(f"{base}/v2/repository/index", json=body or None)
    assert response.status_code == 200
    entries: list[dict[str, str]] = response.json()
    jsonschema.validate(entries, INDEX_SCHEMA)
    return entries


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
