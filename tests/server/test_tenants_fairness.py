"""Fair sharing of one model, measured on the real app (a tiny model, `max_batch_size` 2, equal requests):
a key's single request is not held back by another key's backlog, and weights split the throughput."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fakes import Factory
from model_configs import plain
from servers import live_server
from starlette.applications import Starlette

from llmserve.config.keys import load_keys
from llmserve.engine import load_engine
from llmserve.models.registry import ModelRegistry
from llmserve.server import ServerOptions, create_app

KEYS = {
    "a": {"key": "sk-a"},
    "b": {"key": "sk-b"},
    "heavy": {"key": "sk-heavy", "weight": 3},
    "light": {"key": "sk-light", "weight": 1},
    "ops": {"key": "sk-ops", "admin": True},
}
BODY = {
    "messages": [{"role": "user", "content": "hi"}],
    "max_tokens": 4,
    "ignore_eos": True,
    "temperature": 0,
}


@dataclasses.dataclass
class Served:
    base: str
    app: Starlette
    gate: threading.Event  # the model's load waits for it: requests queue up meanwhile

    @property
    def registry(self) -> ModelRegistry:
        registry: ModelRegistry = self.app.state.registry
        return registry


@pytest.fixture(scope="module")
def server(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    path = tmp_path_factory.mktemp("keys") / "keys.json"
    path.write_text(json.dumps(KEYS))
    model = dataclasses.replace(plain(tiny_dir, "tiny"), max_batch_size=2)
    gate = threading.Event()
    factory = Factory(load_engine, load_gate=gate)
    app = create_app(
        [model], "tiny", factory=factory, preload="none", options=ServerOptions(keys=load_keys(path))
    )
    with live_server(app) as base:
        yield Served(base, app, gate)
        gate.set()


@pytest.fixture
def served(server: Served) -> Served:
    """The server with its model unloaded and its next load held at the gate."""
    ops = {"Authorization": "Bearer sk-ops"}
    unload = httpx.post(f"{server.base}/v1/models/unload", json={"model_id": "tiny"}, headers=ops)
    assert unload.status_code == 200
    server.gate.clear()
    return server


async def until(condition: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def send(client: httpx.AsyncClient, key: str, label: str, finished: list[str]) -> None:
    response = await client.post(
        "/v1/chat/completions", json=BODY, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] == BODY["max_tokens"]
    finished.append(label)


def test_one_request_is_not_held_back_by_another_keys_backlog(served: Served) -> None:
    """Key A queues 24 requests, then key B sends one: B's finishes before at least 18 of A's."""
    finished: list[str] = []

    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=served.base, timeout=60) as client:
            backlog = [asyncio.create_task(send(client, "sk-a", f"a{i}", finished)) for i in range(24)]
            await until(lambda: served.registry.status("tiny").queue_depth == 24)
            served.gate.set()  # the model loads; A's first two run
            await until(lambda: served.registry.status("tiny").running == 2)
            await send(client, "sk-b", "b", finished)
            await asyncio.gather(*backlog)

    asyncio.run(scenario())
    before_b = finished.index("b")
    assert before_b <= 6, finished
    assert len(finished) == 25


def test_weights_three_to_one_split_the_throughput_three_to_one(served: Served) -> None:
    """Both keys keep 24 requests waiting; of the first 24 served, the weight-3 key has 3/4 (± 10%)."""
    finished: list[str] = []

    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=served.base, timeout=60) as client:
            tasks = []
            for _ in range(24):
                tasks.append(asyncio.create_task(send(client, "sk-heavy", "heavy", finished)))
                tasks.append(asyncio.create_task(send(client, "sk-light", "light", finished)))
            await until(lambda: served.registry.status("tiny").queue_depth == 48)
            served.gate.set()
            await until(lambda: len(finished) >= 24)
            for task in tasks:
                task.cancel()  # the rest: the clients leave, the server drops them
            await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(scenario())
    split = Counter(finished[:24])
    assert 2.7 <= split["heavy"] / split["light"] <= 3.3, split
    usage = served.registry.usage.totals()
    heavy, light = usage["heavy"].models["tiny"], usage["light"].models["tiny"]
    each = int(BODY["max_tokens"])  # type: ignore[call-overload]
    assert (
        heavy.completion_tokens >= split["heavy"] * each and light.completion_tokens >= split["light"] * each
    )
