"""keep_alive: idle models unload after their time (config, command line, or the request's own value),
never while a request runs or waits; 0 unloads after each request, -1 never. Real app, scripted engine."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from app_calls import HELLO, status
from cli_run import one_line_error, run_cli
from fakes import Factory, ScriptedEngine
from model_configs import config
from starlette.testclient import TestClient

from llmserve.build import setup_from_args
from llmserve.cli import build_parser
from llmserve.config.entries import ModelConfig, ModelDefaults, parse_config
from llmserve.config.keep_alive import NEVER, parse_keep_alive
from llmserve.errors import ConfigError
from llmserve.server import create_app


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (5, 5.0),
        (2.5, 2.5),
        (0, 0.0),
        ("0", 0.0),
        ("90s", 90.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("250ms", 0.25),
        ("1.5m", 90.0),
        (-1, NEVER),
        ("-1", NEVER),
        ("-5m", NEVER),
        (" 10 ", 10.0),
    ],
)
def test_durations(value: Any, seconds: float) -> None:
    assert parse_keep_alive(value) == seconds


@pytest.mark.parametrize("value", ["soon", "5x", "", "m5", "5m5", True, None, "nan", [5]])
def test_bad_durations(value: Any) -> None:
    with pytest.raises(ValueError, match="keep_alive"):
        parse_keep_alive(value)


def test_config_and_command_line(tmp_path: Path) -> None:
    entry = {"Plain": {"model_id": str(tmp_path)}}
    models = parse_config(
        {"a": {**entry, "keep_alive": "2m"}, "b": {**entry, "alias": "b"}},
        base=tmp_path,
        defaults=ModelDefaults(keep_alive=7),
    )
    assert [m.keep_alive for m in models] == [120.0, 7.0]
    assert parse_config({"a": entry}, base=tmp_path)[0].keep_alive == NEVER
    with pytest.raises(ConfigError, match=r"config: \$.a.keep_alive: keep_alive 'soon' is not seconds"):
        parse_config({"a": {**entry, "keep_alive": "soon"}}, base=tmp_path)
    args = build_parser().parse_args(["plain", "-m", str(tmp_path), "--keep-alive", "5m"])
    assert setup_from_args(args).models[0].keep_alive == 300.0
    line = one_line_error(run_cli("plain", "-m", str(tmp_path), "--keep-alive", "later"))
    assert line.startswith("llmserve plain: error: argument --keep-alive: keep_alive 'later' is not seconds")


@contextmanager
def serving(*models: ModelConfig, step_delay: float = 0.0) -> Iterator[tuple[TestClient, Factory]]:
    factory = Factory(lambda c: ScriptedEngine(["a", "b", "c", "d"], step_delay=step_delay))
    with TestClient(create_app(list(models), models[0].api_id, factory=factory, preload="none")) as client:
        yield client, factory


def wait_for(client: TestClient, wanted: str, model: str = "m", timeout: float = 10) -> float:
    start = time.monotonic()
    while status(client, model) != wanted:
        assert time.monotonic() - start < timeout, f"{model} never became {wanted}"
        time.sleep(0.02)
    return time.monotonic() - start


def card(client: TestClient, model: str = "m") -> Any:
    return client.get(f"/v1/models/{model}").json()


def test_zero_unloads_after_each_request_and_the_next_reloads() -> None:
    with serving(config(0)) as (client, factory):
        assert client.post("/v1/chat/completions", json=HELLO).status_code == 200
        wait_for(client, "unloaded")
        assert client.post("/v1/chat/completions", json=HELLO).status_code == 200
        wait_for(client, "unloaded")
        assert factory.loads == ["m", "m"]
        assert all(engine.closed for engine in factory.engines)  # type: ignore[attr-defined]


def test_never_stays_loaded_and_plans_no_unload() -> None:
    with serving(config(NEVER)) as (client, factory):
        assert client.post("/v1/chat/completions", json=HELLO).status_code == 200
        time.sleep(0.5)
        assert status(client) == "loaded" and card(client)["expires_at"] is None
        assert factory.loads == ["m"]


def test_a_request_resets_the_timer_and_the_deadline_is_shown() -> None:
    with serving(config(2.0)) as (client, factory):
        assert client.post("/v1/chat/completions", json=HELLO).status_code == 200
        expires = card(client)["expires_at"]
        assert abs(expires - (time.time() + 2.0)) <= 1.5
        time.sleep(1.2)
        assert client.post("/v1/chat/completions", json=HELLO).status_code == 200
        time.sleep(1.2)  # 2.4 s after the first request, 1.2 s after the second
        assert status(client) == "loaded"
        wait_for(client, "unloaded")
        assert card(client)["expires_at"] is None
        assert factory.loads == ["m"]


def test_never_idle_while_a_request_runs_or_waits() -> None:
    one = dataclasses.replace(config(0), max_batch_size=1)
    with serving(one, step_delay=0.3) as (client, factory):  # 4 steps: about 1.2 s per request
        with client.stream(
            "POST", "/v1/chat/completions", json={**HELLO, "max_tokens": 4, "stream": True}
        ) as first:
            lines = first.iter_lines()
            next(line for line in lines if "content" in line)
            assert status(client) == "loaded"
            for _ in lines:
                pass
        wait_for(client, "unloaded")
        assert factory.loads == ["m"]


def test_the_requests_keep_alive_holds_from_that_request_on() -> None:
    with serving(config(NEVER), config(0, "z")) as (client, factory):
        assert client.post("/v1/chat/completions", json={**HELLO, "keep_alive": 0}).status_code == 200
        wait_for(client, "unloaded")
        assert (
            client.post("/v1/chat/completions", json={**HELLO, "model": "z", "keep_alive": "10m"}).status_code
            == 200
        )
        time.sleep(0.3)
        assert status(client, "z") == "loaded"
        assert abs(card(client, "z")["expires_at"] - (time.time() + 600)) <= 2
        assert client.post("/v1/chat/completions", json={**HELLO, "model": "z"}).status_code == 200
        wait_for(client, "unloaded", "z")  # without its own value the model's config (0) holds again
        assert factory.loads == ["m", "z"]


def test_a_huge_keep_alive_is_just_long() -> None:
    with serving(config(NEVER)) as (client, factory):
        assert client.post("/v1/chat/completions", json={**HELLO, "keep_alive": 1e300}).status_code == 200
        time.sleep(0.2)
        assert status(client) == "loaded"
        assert client.post("/v1/chat/completions", json=HELLO).status_code == 200
        assert factory.loads == ["m"]


def test_a_bad_keep_alive_is_a_400_naming_it() -> None:
    with serving(config(NEVER)) as (client, factory):
        response = client.post("/v1/chat/completions", json={**HELLO, "keep_alive": "soonish"})
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["param"] == "keep_alive"
        assert "keep_alive 'soonish' is not seconds" in error["message"]
        assert factory.loads == []
