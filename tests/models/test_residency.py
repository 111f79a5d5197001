"""--max-loaded-models: loading another model unloads the least recently used idle one; a model with a
request running or waiting is never evicted; pinned models only when allowed; loads that find no room
wait in line, then get a 503 with Retry-After. Real app, scripted engines."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from app_calls import ask, status, stream_in_background
from fakes import Factory, ScriptedEngine
from model_configs import config
from scripted_app import serving
from starlette.testclient import TestClient

from llmserve.cli import build_parser
from llmserve.models.residency import Residency
from llmserve.server import create_app


def test_loading_another_model_evicts_the_idle_one() -> None:
    with serving("a", "b") as (client, factory, residency):
        assert ask(client, "a").status_code == 200
        assert ask(client, "b").status_code == 200
        assert (status(client, "a"), status(client, "b")) == ("unloaded", "loaded")
        assert ask(client, "a").status_code == 200
        assert (status(client, "a"), status(client, "b")) == ("loaded", "unloaded")
        assert factory.loads == ["a", "b", "a"]
        assert residency.evictions == 2 and residency.loaded() == ["a"]
        assert all(e.closed for e in factory.engines[:2])  # type: ignore[attr-defined]


def test_the_least_recently_used_goes_first() -> None:
    with serving("a", "b", "c", limit=2) as (client, factory, _):
        for model in ("a", "b", "a", "c"):
            assert ask(client, model).status_code == 200
        assert [status(client, m) for m in ("a", "b", "c")] == ["loaded", "unloaded", "loaded"]
        assert factory.loads == ["a", "b", "c"]


def test_a_busy_model_is_never_evicted_and_the_load_waits_its_turn() -> None:
    with serving("a", "b", step_delay=0.25) as (client, factory, residency):  # a's request: about 1 s
        results: list[Any] = []
        running = stream_in_background(client, "a", results)
        while status(client, "a") != "loaded":
            time.sleep(0.01)
        time.sleep(0.1)
        started = time.monotonic()
        assert ask(client, "b").status_code == 200  # waited for a's request, then evicted a
        waited = time.monotonic() - started
        running.join()
        assert results[0][:2] == ("a", 200) and results[0][2].rstrip().endswith("data: [DONE]")
        assert '"finish_reason":"length"' in results[0][2]  # a's request ran to its end
        assert waited > 0.3
        assert factory.loads == ["a", "b"] and (residency.swaps, residency.evictions) == (1, 0)  # a yielded


def test_no_room_before_the_wait_ends_is_a_503_with_retry_after() -> None:
    with serving("a", "b", wait=0.3, step_delay=0.4) as (client, factory, _):  # a: about 1.6 s
        results: list[Any] = []
        running = stream_in_background(client, "a", results)
        while status(client, "a") != "loaded":
            time.sleep(0.01)
        response = ask(client, "b")
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "1"
        assert response.json()["error"] == {
            "message": "no room to load model 'b': 1 model(s) loaded and busy (--max-loaded-models); retry shortly",
            "type": "server_error",
            "param": None,
            "code": "overloaded",
        }
        assert status(client, "b") == "unloaded"
        running.join()
        assert results[0][1] == 200
        assert ask(client, "b").status_code == 200  # a is idle now: it gives way
        assert factory.loads == ["a", "b"]


class SlowClose(ScriptedEngine):
    def close(self) -> None:
        time.sleep(0.6)  # freeing a big model (gc, cache) takes longer than the load's whole wait
        super().close()


def test_an_agreed_eviction_is_waited_for_even_past_the_wait() -> None:
    with serving("a", "b", wait=0.2, engine=SlowClose) as (client, factory, residency):
        assert ask(client, "a").status_code == 200
        assert ask(client, "b").status_code == 200
        assert residency.loaded() == ["b"] and factory.engines[0].closed  # type: ignore[attr-defined]


def test_pinned_models_stay_unless_allowed() -> None:
    with serving("a", "b", wait=0.3, pinned=("a",)) as (client, _, _):
        assert ask(client, "a").status_code == 200
        assert ask(client, "b").status_code == 503
        assert status(client, "a") == "loaded"
    with serving("a", "b", wait=0.3, pinned=("a",), evict_pinned=True) as (client, _, _):
        assert ask(client, "a").status_code == 200
        assert ask(client, "b").status_code == 200
        assert status(client, "a") == "unloaded"


def test_command_line() -> None:
    args = build_parser().parse_args(
        ["plain", "-m", "a/b", "--max-loaded-models", "2", "--load-wait", "5", "--evict-pinned"]
    )
    assert (args.max_loaded_models, args.load_wait, args.evict_pinned) == (2, 5.0, True)
    args = build_parser().parse_args(["plain", "-m", "a/b"])
    assert (args.max_loaded_models, args.load_wait, args.evict_pinned) == (None, 60.0, False)


def test_a_versioned_model_leaves_the_accounting_when_it_unloads() -> None:
    """Found from outside: residency admitted a version under `ID@VERSION` but released it under `ID`, so
    an unloaded version kept its place and the next model found no room."""
    models = [
        dataclasses.replace(config(-1, "m"), version="1", keep_alive=float("inf")),
        dataclasses.replace(config(-1, "m"), version="2", keep_alive=float("inf")),
        dataclasses.replace(config(-1, "other"), keep_alive=float("inf")),
    ]
    factory = Factory(lambda c: ScriptedEngine(["a", "b"]))
    residency = Residency(1, wait=1.0)
    app = create_app(models, "m", factory=factory, preload="none", residency=residency)
    with TestClient(app) as client:
        assert ask(client, "m@2").status_code == 200
        assert residency.loaded() == ["m@2"]
        unloaded = client.post("/v1/models/unload", json={"model_id": "m@2"})
        assert unloaded.json() == {"model_id": "m@2", "status": "unloaded"}
        assert residency.loaded() == []
        assert ask(client, "m@1").status_code == 200
        assert residency.loaded() == ["m@1"]
        assert ask(client, "other").status_code == 200
        assert residency.loaded() == ["other"]
        assert (status(client, "m@1"), status(client, "other")) == ("unloaded", "loaded")


def test_the_view_shows_what_each_holds_and_who_gives_way_first() -> None:
    with serving("a", "b", "c", limit=2, pinned=("c",), sizes={"a": 10, "b": 20, "c": 30}) as (
        client,
        _,
        residency,
    ):
        for model in ("c", "a", "b"):  # a gives way to b: c is pinned
            assert ask(client, model).status_code == 200
        view = residency.view()
        assert (view.max_loaded, view.budget, view.waiting) == (2, None, ())
        assert view.held == {"c": {"cpu": 30}, "b": {"cpu": 20}}
        assert view.eviction_order == ("b",)  # the pinned one is never asked
        assert (view.evictions, view.swaps) == (1, 0)
        assert ask(client, "c").status_code == 200
        residency.evict_pinned = True
        assert residency.view().eviction_order == ("b", "c")  # least recently used first
