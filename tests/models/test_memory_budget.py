"""--memory-budget: models are admitted by their footprint (estimated from their files before the first
load, measured after it), idle ones are evicted least recently used first until a load fits, a busy one
never; a model bigger than the whole budget is a 400 before anything loads. Sizes and budget parsing."""

from __future__ import annotations

from pathlib import Path

import pytest
from app_calls import HELLO, ask, status, stream_in_background
from cli_run import one_line_error, run_cli
from model_configs import plain
from scripted_app import serving
from starlette.testclient import TestClient

from llmserve.cli import build_parser
from llmserve.config.sizes import Budget, format_size, parse_budget, parse_size
from llmserve.models.residency import Residency
from llmserve.server import create_app


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("12GiB", 12 * 2**30),
        ("12gib", 12 * 2**30),
        ("500MB", 500 * 10**6),
        ("1.5G", int(1.5 * 2**30)),
        ("2k", 2048),
        ("2KB", 2000),
        ("1073741824", 2**30),
        (" 3 MiB ", 3 * 2**20),
        ("1TiB", 2**40),
    ],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "GiB", "12 parsecs", "-1GiB", "1e9", "12GiBs"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(ValueError, match="is not a size"):
        parse_size(text)


def test_budgets() -> None:
    assert parse_budget("12GiB") == Budget(every=12 * 2**30)
    budget = parse_budget("cpu=20GiB, cuda:0=70GiB,cuda=10GiB")
    assert budget.devices == {"cpu": 20 * 2**30, "cuda:0": 70 * 2**30, "cuda": 10 * 2**30}
    assert budget.limit("cpu") == 20 * 2**30
    assert budget.limit("cuda:0") == 70 * 2**30
    assert budget.limit("cuda:3") == 10 * 2**30  # "cuda" covers the CUDA devices not named
    assert parse_budget("cpu=1GiB").limit("cuda:0") is None  # a device not named is not limited
    assert parse_budget("cpu=1GiB").describe() == "cpu=1.0 GiB"
    assert format_size(1536) == "1.5 KiB" and format_size(999) == "999 B"
    for bad, message in [
        ("gpu=1GiB", "'gpu' is not a device"),
        ("cpu=1GiB,cpu=2GiB", "device 'cpu' is given twice"),
        ("0", "'0' is not a positive size"),
        ("cpu=lots", "'lots' is not a size"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_budget(bad)


def test_command_line() -> None:
    args = build_parser().parse_args(
        ["plain", "-m", "a/b", "--memory-budget", "cpu=2GiB", "--min-resident", "3"]
    )
    assert (args.memory_budget, args.min_resident) == (Budget(devices={"cpu": 2 * 2**30}), 3.0)
    line = one_line_error(run_cli("plain", "-m", "a/b", "--memory-budget", "a lot"))
    assert "argument --memory-budget: 'a lot' is not a size" in line


def test_loads_evict_least_recently_used_idle_models_until_the_new_one_fits() -> None:
    sizes = {"a": 1000, "b": 1000, "c": 1000, "big": 2000}
    with serving("a", "b", "c", "big", limit=None, budget=Budget(every=2500), sizes=sizes) as (
        client,
        factory,
        residency,
    ):
        for model in ("a", "b", "a"):
            assert ask(client, model).status_code == 200
        assert residency.used() == {"cpu": 2000}
        assert ask(client, "c").status_code == 200  # b is the least recently used: it goes
        assert [status(client, m) for m in ("a", "b", "c")] == ["loaded", "unloaded", "loaded"]
        assert ask(client, "big").status_code == 200  # needs both a and c out
        assert [status(client, m) for m in ("a", "b", "c", "big")] == ["unloaded"] * 3 + ["loaded"]
        assert residency.used() == {"cpu": 2000} and residency.evictions == 3
        assert factory.loads == ["a", "b", "c", "big"]


def test_a_model_bigger_than_the_whole_budget_is_refused_before_loading() -> None:
    with serving("a", "huge", limit=None, budget=Budget(every=2500), sizes={"huge": 3 * 2**30}) as (
        client,
        factory,
        _,
    ):
        assert ask(client, "a").status_code == 200
        response = ask(client, "huge")
        assert response.status_code == 400
        assert response.json() == {
            "error": {
                "message": "model 'huge' needs about 3.0 GiB on cpu, more than the whole --memory-budget "
                "there (2.4 KiB)",
                "type": "invalid_request_error",
                "param": "model",
                "code": "model_too_large",
            }
        }
        reload = client.post("/v1/models/reload", json={"model_id": "huge"})
        assert reload.status_code == 400 and reload.json()["error"]["code"] == "model_too_large"
        assert factory.loads == ["a"] and status(client, "a") == "loaded"  # nothing evicted for it


def test_the_measured_footprint_replaces_the_estimate() -> None:
    # The files say 100 bytes, the loaded model holds 2000: the next load accounts for 2000.
    with serving(
        "a", "b", limit=None, budget=Budget(every=2500), sizes={"a": 2000}, estimates={"a": 100}
    ) as (client, _, residency):
        assert ask(client, "a").status_code == 200
        assert residency.used() == {"cpu": 2000}
        assert ask(client, "b").status_code == 200  # 2000 + 1000 > 2500: a is evicted first
        assert (status(client, "a"), status(client, "b")) == ("unloaded", "loaded")
        assert ask(client, "a").status_code == 200  # admitted on its measured 2000 now
        assert status(client, "b") == "unloaded" and residency.used() == {"cpu": 2000}


def test_a_device_not_in_the_budget_is_not_limited() -> None:
    with serving("a", "b", limit=None, budget=Budget(devices={"cuda:0": 10})) as (client, _, residency):
        assert ask(client, "a").status_code == 200 and ask(client, "b").status_code == 200
        assert (status(client, "a"), status(client, "b")) == ("loaded", "loaded")
        assert residency.used() == {"cpu": 2000} and residency.evictions == 0


def test_busy_models_are_not_evicted_for_the_budget_and_the_load_gets_a_503() -> None:
    with serving(
        "a", "b", limit=None, budget=Budget(every=1500), wait=0.3, step_delay=0.4, min_resident=60
    ) as (client, _, _):
        results: list[object] = []
        running = stream_in_background(client, "a", results)
        while status(client, "a") != "loaded":
            pass
        response = ask(client, "b")
        assert response.status_code == 503 and response.headers["Retry-After"] == "1"
        assert response.json()["error"]["message"] == (
            "no room to load model 'b': --memory-budget 1.5 KiB per device in use by busy models; retry shortly"
        )
        running.join()
        assert status(client, "a") == "loaded"


def test_the_real_estimate_refuses_a_checkpoint_bigger_than_the_budget(tiny_dir: Path) -> None:
    residency = Residency(budget=Budget(every=4096))
    app = create_app([plain(tiny_dir, "tiny")], "tiny", preload="none", residency=residency)
    with TestClient(app) as client:
        response = client.post("/v1/chat/completions", json={**HELLO, "model": "tiny"})
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "model_too_large"
        assert error["message"].startswith("model 'tiny' needs about ")
        assert error["message"].endswith("more than the whole --memory-budget there (4.0 KiB)")
        assert status(client, "tiny") == "unloaded"
