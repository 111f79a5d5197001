"""Load progress (the status and the events carry a stage and a fraction while a model loads) and
`unload_mode: offload` (an engine that can park its weights wakes without a new load)."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import httpx
import pytest
from app_calls import HELLO, watching
from fakes import Factory, ScriptedEngine
from model_configs import config, plain
from servers import live_server
from starlette.testclient import TestClient

from llmserve.config.entries import parse_config
from llmserve.engine import load_engine
from llmserve.errors import ConfigError
from llmserve.server import create_app


def test_the_status_shows_the_stage_and_fraction_while_loading() -> None:
    gate = threading.Event()
    factory = Factory(lambda c: ScriptedEngine(["a"]), load_gate=gate)
    app = create_app([config(float("inf"))], "m", factory=factory, preload="none")
    with TestClient(app) as client:
        assert client.post("/v1/models/status", json={"model_id": "m"}).json() == {
            "model_id": "m",
            "status": "unloaded",
        }
        threading.Thread(target=lambda: client.post("/v1/chat/completions", json=HELLO)).start()
        deadline = time.monotonic() + 10
        while (body := client.post("/v1/models/status", json={"model_id": "m"}).json())[
            "status"
        ] == "unloaded":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert body == {
            "model_id": "m",
            "status": "reloading",
            "progress": {"stage": "starting", "fraction": 0.02},
        }
        card = client.get("/v1/models/m").json()
        assert card["status"] == "reloading" and card["progress"] == {"stage": "starting", "fraction": 0.02}
        gate.set()
        while client.post("/v1/models/status", json={"model_id": "m"}).json()["status"] != "loaded":
            time.sleep(0.01)
        assert client.post("/v1/models/status", json={"model_id": "m"}).json() == {
            "model_id": "m",
            "status": "loaded",
        }
        assert client.get("/v1/models/m").json()["progress"] is None


def test_progress_events_of_a_real_load_in_order(tiny_dir: Path) -> None:
    app = create_app([plain(tiny_dir, "tiny")], "tiny", factory=load_engine, preload="none")
    with live_server(app) as base:
        thread, events = watching(base, 5, kind="load_progress")
        assert httpx.post(f"{base}/v1/chat/completions", json=HELLO, timeout=60).status_code == 200
        thread.join(10)
    assert [(e["model"], e["state"], e["stage"], e["fraction"]) for e in events] == [
        ("tiny", "loading", "waiting_for_memory", 0.0),
        ("tiny", "loading", "starting", 0.02),
        ("tiny", "loading", "tokenizer", 0.05),
        ("tiny", "loading", "weights", 0.1),
        ("tiny", "loading", "finishing", 0.95),
    ]


class Parkable(ScriptedEngine):
    """An engine on a "GPU": offload parks it, wake brings it back (counted)."""

    def offload(self) -> bool:
        self.parked = True
        return True

    def wake(self) -> None:
        self.parked = False
        self.wakes = getattr(self, "wakes", 0) + 1


def test_offload_parks_the_engine_and_the_next_request_wakes_it_without_a_load() -> None:
    factory = Factory(lambda c: Parkable(["a", "b"]))
    model = dataclasses.replace(config(float("inf")), unload_mode="offload")
    with TestClient(create_app([model], "m", factory=factory, preload="none")) as client:
        assert (
            client.post("/v1/chat/completions", json=HELLO).json()["choices"][0]["message"]["content"] == "ab"
        )
        assert client.post("/v1/models/unload", json={"model_id": "m"}).json()["status"] == "unloaded"
        engine = factory.engines[0]
        assert isinstance(engine, Parkable) and engine.parked and not engine.closed
        assert (
            client.post("/v1/chat/completions", json=HELLO).json()["choices"][0]["message"]["content"] == "ab"
        )
        assert factory.loads == ["m"] and engine.wakes == 1 and not engine.parked
    assert engine.closed  # shutdown frees parked weights too


def test_offload_falls_back_to_a_real_unload_when_the_engine_cannot_park() -> None:
    factory = Factory(lambda c: ScriptedEngine(["a"]))  # a CPU engine: offload() is False
    model = dataclasses.replace(config(float("inf")), unload_mode="offload")
    with TestClient(create_app([model], "m", factory=factory, preload="none")) as client:
        assert client.post("/v1/chat/completions", json=HELLO).status_code == 200
        client.post("/v1/models/unload", json={"model_id": "m"})
        assert factory.engines[0].closed  # type: ignore[attr-defined]
        assert client.post("/v1/chat/completions", json=HELLO).status_code == 200
        assert factory.loads == ["m", "m"]


def test_unload_mode_in_the_config(tmp_path: Path) -> None:
    entry = {"Plain": {"model_id": "org/a"}}
    models = parse_config(
        {"a": {**entry, "unload_mode": "offload"}, "b": {**entry, "alias": "b"}}, base=tmp_path
    )
    assert [m.unload_mode for m in models] == ["offload", "drop"]
    with pytest.raises(ConfigError, match=r"\$\.a\.unload_mode"):
        parse_config({"a": {**entry, "unload_mode": "swap"}}, base=tmp_path)
