"""The keys in force over time: `max_concurrent`, a reload (`POST /admin/keys/reload`, SIGHUP on the real
command) that removes a key while it has a request running, and a bad file that changes nothing."""

from __future__ import annotations

import dataclasses
import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes import Factory, ScriptedEngine
from model_configs import config
from servers import llmserve_process
from starlette.testclient import TestClient

from llmserve.config.keys import load_keys
from llmserve.server import ServerOptions, create_app

HELLO = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@contextmanager
def gated_app(path: Path, **options: Any) -> Iterator[tuple[TestClient, threading.Event]]:
    """A scripted model (with its config's `options`) whose load waits for the gate: a request stays in
    flight until it opens."""
    gate = threading.Event()
    factory = Factory(lambda c: ScriptedEngine(["a", "b"]), load_gate=gate)
    model = dataclasses.replace(config(-1, "m"), **options)
    app = create_app(
        [model], "m", factory=factory, preload="none", options=ServerOptions(keys=load_keys(path))
    )
    with TestClient(app) as client:
        try:
            yield client, gate
        finally:
            gate.set()


def in_background(client: TestClient, key: str, into: list[httpx.Response]) -> threading.Thread:
    thread = threading.Thread(
        target=lambda: into.append(client.post("/v1/chat/completions", json=HELLO, headers=auth(key)))
    )
    thread.start()
    return thread


def write(path: Path, entries: dict[str, Any]) -> Path:
    path.write_text(json.dumps(entries))
    return path


def test_max_concurrent_refuses_the_request_beyond_it(tmp_path: Path) -> None:
    path = write(
        tmp_path / "keys.json", {"solo": {"key": "sk-solo", "max_concurrent": 1}, "ops": {"key": "sk-ops"}}
    )
    with gated_app(path) as (client, gate):
        first: list[httpx.Response] = []
        thread = in_background(client, "sk-solo", first)
        until(lambda: client.app.state.quotas.in_flight("solo") == 1)  # type: ignore[attr-defined]
        refused = client.post("/v1/chat/completions", json=HELLO, headers=auth("sk-solo"))
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "concurrency_limit_exceeded"
        assert client.get("/v1/models", headers=auth("sk-ops")).status_code == 200  # other keys: unaffected
        gate.set()
        thread.join(10)
        assert first[0].status_code == 200 and first[0].json()["choices"][0]["message"]["content"] == "ab"
        assert client.post("/v1/chat/completions", json=HELLO, headers=auth("sk-solo")).status_code == 200


def test_a_full_model_still_takes_one_request_of_a_key_that_has_none_there(tmp_path: Path) -> None:
    """Backpressure with keys: one key's backlog fills the model (max_batch_size 1 + max_queue 1), yet
    another key's request gets in, one; without keys the limit is what it was (tests/models)."""
    path = write(tmp_path / "keys.json", {"flood": {"key": "sk-flood"}, "one": {"key": "sk-one"}})
    with gated_app(path, max_batch_size=1, max_queue=1) as (client, gate):
        answers: list[httpx.Response] = []
        threads = [in_background(client, "sk-flood", answers) for _ in range(2)]
        until(lambda: client.app.state.registry.status("m").queue_depth == 2)  # type: ignore[attr-defined]
        full = client.post("/v1/chat/completions", json=HELLO, headers=auth("sk-flood"))
        assert full.status_code == 503 and full.json()["error"]["code"] == "overloaded"
        threads.append(in_background(client, "sk-one", answers))
        until(lambda: client.app.state.registry.status("m").queue_depth == 3)  # type: ignore[attr-defined]
        assert client.post("/v1/chat/completions", json=HELLO, headers=auth("sk-one")).status_code == 503
        gate.set()
        for thread in threads:
            thread.join(10)
        assert [a.status_code for a in answers] == [200, 200, 200]


def test_a_reload_stops_a_removed_key_at_once_and_lets_its_request_finish(tmp_path: Path) -> None:
    path = write(tmp_path / "keys.json", {"bob": {"key": "sk-bob"}, "ops": {"key": "sk-ops", "admin": True}})
    with gated_app(path) as (client, gate):
        running: list[httpx.Response] = []
        thread = in_background(client, "sk-bob", running)
        until(lambda: client.app.state.registry.status("m").queue_depth == 1)  # type: ignore[attr-defined]
        write(path, {"ops": {"key": "sk-ops", "admin": True}, "carol": {"key": "sk-carol", "models": ["m"]}})
        reloaded = client.post("/admin/keys/reload", headers=auth("sk-ops"))
        assert reloaded.json() == {"object": "keys", "source": str(path), "tenants": ["ops", "carol"]}
        refused = client.get("/v1/models", headers=auth("sk-bob"))
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
        assert client.get("/v1/models", headers=auth("sk-carol")).status_code == 200
        gate.set()
        thread.join(10)
        assert running[0].status_code == 200 and running[0].json()["choices"][0]["message"]["content"] == "ab"
        path.write_text('{"ops": ')
        bad = client.post("/admin/keys/reload", headers=auth("sk-ops"))
        assert bad.status_code == 400
        assert bad.json()["error"]["message"] == (
            f"keys file {path}: invalid JSON at line 1 column 9: Expecting value; the previous keys stay in force"
        )
        assert client.get("/v1/models", headers=auth("sk-carol")).status_code == 200
        usage = client.get("/admin/usage", headers=auth("sk-ops")).json()["tenants"]
        assert usage["bob"]["models"]["m"]["since_start"]["requests"] == 1  # counted, though gone


def test_without_a_keys_file_there_is_nothing_to_reload(tmp_path: Path) -> None:
    app = create_app([config(-1, "m")], "m", factory=Factory(lambda c: ScriptedEngine(["a"])), preload="none")
    with TestClient(app) as client:
        response = client.post("/admin/keys/reload")
        assert response.status_code == 400
        assert "started without a keys file" in response.json()["error"]["message"]
        assert client.get("/v1/usage").json()["tenants"]["-"]["since_start"]["requests"] == 2


def test_sighup_reloads_the_keys_file_of_the_real_command(
    tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "keys.json", {"ann": {"key": "sk-ann"}})
    monkeypatch.setenv("LLMSERVE_KEYS_FILE", str(path))  # the environment's way of naming it
    with llmserve_process("plain", "-m", str(tiny_dir), "--preload", "none") as (base, process):
        assert httpx.get(f"{base}/v1/models", headers=auth("sk-ann")).status_code == 200
        assert httpx.get(f"{base}/v1/models", headers=auth("sk-ben")).status_code == 401
        write(path, {"ben": {"key": "sk-ben"}})
        process.send_signal(signal.SIGHUP)
        until(lambda: httpx.get(f"{base}/v1/models", headers=auth("sk-ben")).status_code == 200)
        assert httpx.get(f"{base}/v1/models", headers=auth("sk-ann")).status_code == 401
        path.write_text("not json")
        process.send_signal(signal.SIGHUP)  # a bad file: logged, and the keys stay
        time.sleep(0.3)
        assert httpx.get(f"{base}/v1/models", headers=auth("sk-ben")).status_code == 200
        assert process.poll() is None
