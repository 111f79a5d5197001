"""Several versions of a model side by side: `ID@VERSION` picks one, `ID` the default version (marked,
else the newest); both APIs see them; `POST /v1/models/promote` switches the default with no request
failing, even while requests stream across the switch; the config's rules for versions."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from app_calls import HELLO, index
from fakes import Factory, ScriptedEngine
from model_configs import model
from scripted_app import v2_server
from servers import live_server

from llmserve.config.entries import parse_config
from llmserve.errors import ConfigError
from llmserve.models.registry import version_key
from llmserve.server import create_app


def ask(base: str, name: str) -> httpx.Response:
    return httpx.post(f"{base}/v1/chat/completions", json={**HELLO, "model": name}, timeout=30)


def test_id_means_the_newest_version_and_id_at_version_picks_one() -> None:
    with v2_server(model("a", "2"), model("a", "10"), model("b")) as (base, factory):
        assert ask(base, "a").json()["model"] == "a@10"  # 10 > 2: versions compare as numbers
        assert ask(base, "a@2").json()["model"] == "a@2"
        assert ask(base, "b").json()["model"] == "b"
        assert ask(base, "b@1").json()["model"] == "b"  # an unversioned model is version "1"
        missing = ask(base, "a@3")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
        cards = httpx.get(f"{base}/v1/models").json()["data"]
        assert [(c["id"], c["version"], c["status"]) for c in cards] == [
            ("default", "10", "loaded"),
            ("a", "10", "loaded"),
            ("a@2", "2", "loaded"),
            ("a@10", "10", "loaded"),
            ("b", None, "loaded"),
        ]
        assert index(base) == [
            {"name": "a", "version": "2", "state": "READY", "reason": ""},
            {"name": "a", "version": "10", "state": "READY", "reason": ""},
            {"name": "b", "version": "1", "state": "READY", "reason": ""},
        ]
        assert httpx.get(f"{base}/v2/models/a").json()["versions"] == ["2", "10"]
        generated = httpx.post(f"{base}/v2/models/a/versions/2/generate", json={"text_input": "hi"}).json()
        assert generated == {"model_name": "a", "model_version": "2", "text_output": "ab"}
        assert sorted(factory.loads) == ["a@10", "a@2", "b"]


def test_default_version_marks_the_default() -> None:
    with v2_server(model("a", "1", default_version=True), model("a", "2")) as (base, _):
        assert ask(base, "a").json()["model"] == "a@1"
        assert (
            httpx.post(f"{base}/v2/models/a/generate", json={"text_input": "hi"}).json()["model_version"]
            == "1"
        )


def test_promote_switches_new_requests_once_the_version_is_loaded() -> None:
    with v2_server(
        model("a", "1"),
        model(
            "a",
            "2",
        ),
        model("b"),
    ) as (base, factory):
        assert ask(base, "a").json()["model"] == "a@2"
        response = httpx.post(f"{base}/v1/models/promote", json={"model_id": "a", "version": "1"})
        assert response.json() == {
            "model_id": "a",
            "version": "1",
            "previous_version": "2",
            "status": "loaded",
        }
        assert ask(base, "a").json()["model"] == "a@1"
        assert factory.loads == ["a@2", "a@1"]  # loaded by the promote, before the switch
        for body, status in [
            ({"model_id": "a", "version": "9"}, 404),
            ({"model_id": "zz", "version": "1"}, 404),
            ({"model_id": "a"}, 400),
        ]:
            assert httpx.post(f"{base}/v1/models/promote", json=body).status_code == status


def test_no_request_fails_or_is_dropped_across_a_promote() -> None:
    factory = Factory(lambda c: ScriptedEngine(["a", "b", "c", "d"], step_delay=0.01))
    app = create_app([model("a", "1"), model("a", "2")], "a", factory=factory, preload="none")
    results: list[tuple[int, str]] = []
    with live_server(app) as base:
        httpx.post(f"{base}/v1/models/promote", json={"model_id": "a", "version": "1"}).raise_for_status()
        stop = threading.Event()

        def stream_forever() -> None:
            with httpx.Client(base_url=base, timeout=30) as http:
                while not stop.is_set():
                    body = {**HELLO, "model": "a", "stream": True, "max_tokens": 4}
                    with http.stream("POST", "/v1/chat/completions", json=body) as response:
                        text = response.read().decode()
                        served = text.split('"model":"', 1)[1].split('"', 1)[0] if '"model":"' in text else ""
                        ok = response.status_code == 200 and text.rstrip().endswith("data: [DONE]")
                        results.append((200 if ok and '"error"' not in text else 500, served))

        clients = [threading.Thread(target=stream_forever) for _ in range(4)]
        for client in clients:
            client.start()
        time.sleep(0.5)
        switch = httpx.post(f"{base}/v1/models/promote", json={"model_id": "a", "version": "2"}, timeout=30)
        time.sleep(0.5)
        stop.set()
        for client in clients:
            client.join(30)
    assert switch.status_code == 200
    assert results and all(code == 200 for code, _ in results)
    served = [name for _, name in results]
    assert "a@1" in served and "a@2" in served
    first_new = served.index("a@2")
    assert served[-1] == "a@2" and served[first_new:].count("a@1") <= 4  # only requests already running


def test_version_rules_in_the_config(tmp_path: Path) -> None:
    entry: dict[str, Any] = {"Plain": {"model_id": "org/m"}}
    models = parse_config(
        {"x": {**entry, "version": "1"}, "y": {**entry, "version": "2", "revision": "main"}}, base=tmp_path
    )
    assert [(m.unit_id, m.version_label, m.revision) for m in models] == [
        ("org/m@1", "1", None),
        ("org/m@2", "2", "main"),
    ]
    for data, message in [
        ({"x": entry, "y": entry}, "already used by"),
        ({"x": {**entry, "version": "1"}, "y": {**entry, "version": "1"}}, "already used by"),
        ({"x": entry, "y": {**entry, "version": "2"}}, "already used by"),
        ({"x": {**entry, "version": "2"}, "y": entry}, "already used by"),
        ({"x": {**entry, "default_version": True}}, 'has no "version"'),
        (
            {
                "x": {**entry, "version": "1", "default_version": True},
                "y": {**entry, "version": "2", "default_version": True},
            },
            "already has default version '1'",
        ),
        ({"x": {**entry, "version": "a b"}}, "version"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_config(data, base=tmp_path)


def test_version_order() -> None:
    assert sorted(["10", "9", "v1.10", "v1.2", "2"], key=version_key) == ["2", "9", "10", "v1.2", "v1.10"]
