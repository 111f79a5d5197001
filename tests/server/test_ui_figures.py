"""GET /v1/figures and /v1/figures/events, the dashboard's data: each model version from its ModelStatus
with what it served, each device's memory with every model's share under --memory-budget, the next
eviction candidate, and the one stream that carries the figures each interval plus every lifecycle
event. Real app, scripted engines."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from app_calls import HELLO, ask
from fakes import Factory, Parking, ScriptedEngine
from model_configs import config, model
from scripted_app import serving
from servers import live_server
from starlette.testclient import TestClient

from llmserve.config.keys import load_keys
from llmserve.config.sizes import Budget
from llmserve.models.residency import ResidencyView
from llmserve.models.status import ModelState
from llmserve.protocol.figures import Figures
from llmserve.server import create_app
from llmserve.server.figures import devices, next_eviction, with_rates
from llmserve.server.options import ServerOptions

VOLATILE = ("load_seconds", "ttft_seconds_total")


def figures(client: TestClient) -> dict[str, Any]:
    response = client.get("/v1/figures")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    Figures.model_validate(body)
    return body


def entry(body: dict[str, Any], unit: str) -> dict[str, Any]:
    [found] = [m for m in body["models"] if m["id"] == unit]
    return {k: v for k, v in found.items() if k not in VOLATILE}


def unloaded(unit: str, **changes: Any) -> dict[str, Any]:
    base = {
        "id": unit,
        "api_id": unit,
        "version": None,
        "default_version": True,
        "default_model": unit == "a",
        "kind": "Plain",
        "engine": "transformers",
        "quantization": None,
        "state": "unloaded",
        "status": "unloaded",
        "reason": None,
        "error": None,
        "progress": None,
        "memory_bytes": None,
        "footprint": {},
        "expires_at": None,
        "queue_depth": 0,
        "running": 0,
        "capacity": 320,
        "context_length": None,
        "kv_cache": None,
        "requests": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "decoded_tokens": 0,
        "parked": False,
        "ttft_count": 0,
        "rates": None,
    }
    return {**base, **changes}


def test_figures_follow_loads_requests_and_evictions_under_a_memory_budget() -> None:
    budget = Budget(every=10_000)
    with serving("a", "b", limit=1, budget=budget, sizes={"a": 3000, "b": 5000}) as (client, _, _):
        body = figures(client)
        assert entry(body, "a") == unloaded("a")
        assert {k: body[k] for k in ("default_model", "max_loaded_models", "memory_budget")} == {
            "default_model": "a",
            "max_loaded_models": 1,
            "memory_budget": "9.8 KiB per device",
        }
        assert body["devices"] == [
            {
                "device": "cpu",
                "budget_bytes": 10_000,
                "used_bytes": 0,
                "kv_reserved_bytes": 0,
                "free_bytes": 10_000,
                "models": [],
            }
        ]
        assert (body["loaded_models"], body["next_eviction"], body["evictions"]) == (0, None, 0)

        assert ask(client, "a").status_code == 200  # two tokens, "a" and "b": finish_reason length
        body = figures(client)
        loaded = {"state": "loaded", "status": "loaded", "memory_bytes": 3000, "footprint": {"cpu": 3000}}
        served = {"requests": 1, "prompt_tokens": 2, "completion_tokens": 2, "decoded_tokens": 2}
        assert entry(body, "a") == unloaded("a", **loaded, **served, context_length=64, ttft_count=1)
        [cpu] = body["devices"]
        assert cpu["models"] == [{"model": "a", "bytes": 3000, "estimated": False}]
        assert (cpu["used_bytes"], cpu["free_bytes"]) == (3000, 7000)
        assert (body["loaded_models"], body["resident"], body["next_eviction"]) == (1, ["a"], "a")

        assert ask(client, "b").status_code == 200  # a is idle: it gives way
        body = figures(client)
        gone = {"reason": "evicted", "memory_bytes": 3000, "footprint": {"cpu": 3000}}
        assert entry(body, "a") == unloaded("a", **gone, **served, ttft_count=1)
        assert entry(body, "b")["state"] == "loaded"
        [cpu] = body["devices"]
        assert cpu["models"] == [{"model": "b", "bytes": 5000, "estimated": False}]
        assert (body["evictions"], body["resident"], body["next_eviction"]) == (1, ["b"], "b")


def test_a_tenant_sees_only_the_models_its_key_may_use(tmp_path: Path) -> None:
    """As /v1/models: the others are left out, and their share of a device is one `other models`."""
    path = tmp_path / "keys.json"
    keys = {"alice": {"key": "sk-alice", "models": ["bravo"]}, "ops": {"key": "sk-ops", "admin": True}}
    path.write_text(json.dumps(keys))
    options = ServerOptions(keys=load_keys(path))
    sizes = {"alpha": 3000, "bravo": 2000, "charlie": 1000}
    alice, ops = {"Authorization": "Bearer sk-alice"}, {"Authorization": "Bearer sk-ops"}
    budget = Budget(every=10_000)
    with serving(*sizes, limit=3, budget=budget, sizes=sizes, options=options) as (client, _, _):
        for name in sizes:  # alpha is the least recently used, the next to evict
            chat = {**HELLO, "model": name}
            assert client.post("/v1/chat/completions", json=chat, headers=ops).status_code == 200
        response = client.get("/v1/figures", headers=alice)
        assert "alpha" not in response.text and "charlie" not in response.text
        body = response.json()
        Figures.model_validate(body)
        assert [m["id"] for m in body["models"]] == ["bravo"]
        assert (body["tenant"], body["admin"]) == ("alice", False)
        [cpu] = body["devices"]
        assert cpu["models"] == [
            {"model": "other models", "bytes": 4000, "estimated": False},
            {"model": "bravo", "bytes": 2000, "estimated": False},
        ]
        assert (cpu["used_bytes"], cpu["free_bytes"]) == (6000, 4000)  # all of it still counts
        assert body["resident"] == ["other models", "bravo", "other models"]
        assert (body["next_eviction"], body["default_model"]) == ("other models", "other models")
        assert body["loaded_models"] == 3
        every = client.get("/v1/figures", headers=ops).json()
        assert [m["id"] for m in every["models"]] == list(sizes)
        assert (every["tenant"], every["admin"], every["next_eviction"]) == ("ops", True, "alpha")
        assert [share["model"] for share in every["devices"][0]["models"]] == ["alpha", "bravo", "charlie"]
    with serving("a") as (client, _, _):  # no keys file: no tenant
        assert (figures(client)["tenant"], figures(client)["admin"]) == (None, True)


def test_versions_carry_which_one_the_api_id_names_and_promote_moves_it() -> None:
    factory = Factory(lambda c: ScriptedEngine(["a"]))
    models = [model("v", "1"), model("v", "2")]
    with TestClient(create_app(models, "v", factory=factory, preload="none")) as client:
        marks = {
            m["id"]: (m["version"], m["default_version"], m["default_model"])
            for m in figures(client)["models"]
        }
        assert marks == {"v@1": ("1", False, False), "v@2": ("2", True, True)}
        assert figures(client)["default_model"] == "v@2"
        response = client.post("/v1/models/promote", json={"model_id": "v", "version": "1"})
        assert response.status_code == 200
        marks = {m["id"]: (m["default_version"], m["default_model"]) for m in figures(client)["models"]}
        assert marks == {"v@1": (True, True), "v@2": (False, False)}


def read_stream(
    base: str, into: list[tuple[str, dict[str, Any]]], ready: threading.Event, stop: threading.Event
) -> None:
    with httpx.stream("GET", f"{base}/v1/figures/events?interval=0.2", timeout=30) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        kind = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line[len("event: ") :]
            elif line.startswith("data: "):
                into.append((kind, json.loads(line[len("data: ") :])))
                ready.set()
            if stop.is_set():
                return


@pytest.fixture
def live() -> Iterator[str]:
    factory = Factory(lambda c: ScriptedEngine(["x"] * 40, step_delay=0.01))
    app = create_app([config(float("inf"), "m")], "m", factory=factory, preload="none")
    with live_server(app) as base:
        yield base


def wait_until(events: list[tuple[str, dict[str, Any]]], test: Any, what: str) -> tuple[str, dict[str, Any]]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for event in list(events):
            if test(*event):
                return event
        time.sleep(0.02)
    raise AssertionError(f"no {what} in {[kind for kind, _ in events]}")


def test_the_stream_has_figures_at_once_every_lifecycle_event_and_rates(live: str) -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    ready, stop = threading.Event(), threading.Event()
    reader = threading.Thread(target=read_stream, args=(live, events, ready, stop), daemon=True)
    reader.start()
    assert ready.wait(10)
    kind, first = events[0]
    assert (
        kind == "figures"
        and first["models"][0]["state"] == "unloaded"
        and first["models"][0]["rates"] is None
    )
    body = {**HELLO, "model": "m", "max_tokens": 30}
    assert httpx.post(f"{live}/v1/chat/completions", json=body, timeout=30).status_code == 200
    loaded = wait_until(events, lambda k, e: k == "model_state" and e["state"] == "loaded", "loaded event")
    assert loaded[1]["model"] == "m" and loaded[1]["previous"] == "loading"
    after = events.index(loaded)
    wait_until(events[after:], lambda k, e: k == "figures" and e["models"][0]["state"] == "loaded", "figures")

    def busy_tick(kind: str, event: dict[str, Any]) -> bool:
        rates = event["models"][0]["rates"] if kind == "figures" else None
        return rates is not None and rates["tokens_per_second"] > 0 and rates["requests"] == 1

    _, tick = wait_until(events, busy_tick, "a figures event with the request's rates")
    rates = tick["models"][0]["rates"]
    assert 0.15 < rates["seconds"] < 1.0
    assert rates["ttft_seconds"] is not None and rates["ttft_seconds"] > 0
    assert tick["models"][0]["decoded_tokens"] == 30
    stop.set()


@pytest.mark.parametrize("interval", ["0.01", "abc", "11"])
def test_an_interval_out_of_range_is_a_400(interval: str) -> None:
    with serving("a") as (client, _, _):
        response = client.get(f"/v1/figures/events?interval={interval}")
        assert response.status_code == 400
        assert response.json()["error"]["param"] == "interval"


def view(**changes: Any) -> ResidencyView:
    fields: dict[str, Any] = {
        "max_loaded": None,
        "budget": None,
        "held": {},
        "eviction_order": (),
        "waiting": (),
        "evictions": 0,
        "swaps": 0,
    }
    return ResidencyView(**{**fields, **changes})


def test_without_limits_the_bar_is_the_measured_footprints_and_the_free_memory() -> None:
    from llmserve.models.registry import ModelRegistry

    registry = ModelRegistry(
        [config(float("inf"), "a")], "a", Factory(lambda c: ScriptedEngine(["x"], memory=700))
    )
    registry.start("default")
    try:
        deadline = time.monotonic() + 10
        while registry.status("a").state is not ModelState.LOADED:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        statuses = registry.statuses()
        [cpu] = devices(statuses, None, lambda device: 100, lambda device: 5000)
        assert cpu.model_dump() == {
            "device": "cpu",
            "budget_bytes": None,
            "used_bytes": 800,
            "kv_reserved_bytes": 100,
            "free_bytes": 5000,
            "models": [{"model": "a", "bytes": 700, "estimated": False}],
        }
        # a loading model's share under limits is residency's estimate, marked so
        held = view(
            held={"a": {"cpu": 700}, "b": {"cpu": 300, "cuda:0": 50}}, budget=Budget(devices={"cuda:0": 90})
        )
        out = {d.device: d for d in devices(statuses, held, lambda device: 0, lambda device: None)}
        assert [s.model_dump() for s in out["cpu"].models] == [
            {"model": "a", "bytes": 700, "estimated": False},
            {"model": "b", "bytes": 300, "estimated": True},
        ]
        assert (out["cpu"].budget_bytes, out["cpu"].free_bytes) == (None, None)
        assert (out["cuda:0"].budget_bytes, out["cuda:0"].free_bytes) == (90, 40)
        assert next_eviction(statuses, held) is None  # nothing in the order
        assert next_eviction(statuses, view(eviction_order=("b", "a"))) == "a"  # b is not loaded
    finally:
        registry.shutdown(10)


def test_rates_are_the_differences_over_the_interval() -> None:
    def snapshot(when: float, decoded: int, requests: int, ttft_total: float) -> Figures:
        model = {**unloaded("a"), "load_seconds": None, "decoded_tokens": decoded, "requests": requests}
        model.update(ttft_seconds_total=ttft_total, ttft_count=requests)
        return Figures.model_validate(
            {
                "time": when,
                "default_model": "a",
                "max_loaded_models": None,
                "memory_budget": None,
                "loaded_models": 0,
                "resident": [],
                "next_eviction": None,
                "waiting_for_room": [],
                "evictions": 0,
                "swaps": 0,
                "devices": [],
                "models": [model],
            }
        )

    first = snapshot(100.0, 10, 1, 0.5)
    assert with_rates(None, first).models[0].rates is None
    rates = with_rates(first, snapshot(102.0, 50, 3, 1.5)).models[0].rates
    assert rates is not None
    assert rates.model_dump() == {
        "seconds": 2.0,
        "tokens_per_second": 20.0,
        "requests": 2,
        "ttft_seconds": 0.5,
    }
    idle = with_rates(first, snapshot(101.0, 10, 1, 0.5)).models[0].rates
    assert idle is not None and (idle.tokens_per_second, idle.ttft_seconds) == (0.0, None)


def test_an_offloaded_model_is_parked_until_its_next_request_wakes_it() -> None:
    factory = Factory(lambda c: Parking(["a"]))
    parkable = dataclasses.replace(config(float("inf"), "m"), unload_mode="offload")
    with TestClient(create_app([parkable], "m", factory=factory, preload="none")) as client:
        assert ask(client, "m").status_code == 200
        assert entry(figures(client), "m")["parked"] is False
        assert client.post("/v1/models/unload", json={"model_id": "m"}).status_code == 200
        assert {k: entry(figures(client), "m")[k] for k in ("state", "parked")} == {
            "state": "unloaded",
            "parked": True,
        }
        assert ask(client, "m").status_code == 200  # woken, not loaded again
        assert entry(figures(client), "m")["parked"] is False and factory.loads == ["m"]
