"""/v1/models and the seed's unload/reload/status, auto-reload, load failures and freed memory."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import shutil
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes import Factory, ScriptedEngine, Slowed, assert_cancelled
from model_configs import plain
from servers import live_server
from starlette.testclient import TestClient
from tiny import build_model, reference_greedy
from wire import assert_schema

from llmserve.config.entries import ModelConfig, PlainSpec
from llmserve.engine import load_engine
from llmserve.engine.hf import HFEngine
from llmserve.engine.memory import resident_bytes, trim_process_memory
from llmserve.server import create_app

USER = [{"role": "user", "content": "Hello"}]


def chat(client: TestClient, model: str | None = None, **body: Any) -> httpx.Response:
    payload: dict[str, Any] = {"messages": USER, "max_tokens": 3, **body}
    if model is not None:
        payload["model"] = model
    return client.post("/v1/chat/completions", json=payload)


def manage(client: TestClient, action: str, model_id: str) -> httpx.Response:
    return client.post(f"/v1/models/{action}", json={"model_id": model_id})


def wait_status(client: TestClient, model_id: str, status: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while manage(client, "status", model_id).json()["status"] != status:
        assert time.monotonic() < deadline, f"{model_id} never became {status}"
        time.sleep(0.02)


def footprint(directory: Path) -> int:
    """What the loaded model measures: its weights and buffers in the dtype the server picks."""
    import torch
    from transformers import AutoModelForCausalLM

    from llmserve.engine.devices import resolve_dtype

    dtype = resolve_dtype("auto", torch.device("cpu"))
    return int(AutoModelForCausalLM.from_pretrained(directory, dtype=dtype).get_memory_footprint())


def test_models_list_default_first_with_status(tiny_dir: Path, tiny_dir2: Path) -> None:
    models = [
        plain(tiny_dir, "org/tiny"),
        dataclasses.replace(plain(tiny_dir2, "tiny2"), kv_cache_memory=1 << 20),
    ]
    app = create_app(models, "tiny2", preload="default")
    with TestClient(app) as client:
        wait_status(client, "tiny2", "loaded")
        body = client.get("/v1/models").json()
        assert_schema("ListModelsResponse", body)
        created = body["data"][0]["created"]
        assert isinstance(created, int)
        card = {
            "object": "model",
            "created": created,
            "owned_by": "llmserve",
            "engine": "transformers",
            "quantization": None,
            "expires_at": None,
            "progress": None,
            "version": None,
            "sampling_defaults": {
                "temperature": 1.0,
                "top_p": 1.0,
                "top_k": 0,
                "min_p": 0.0,
                "repetition_penalty": 1.0,
                "max_tokens": None,
            },
            "sampling_sources": dict.fromkeys(
                ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "max_tokens"), "api"
            ),
        }
        # the tiny model: 2 layers x (keys, values) x 2 KV heads x 16 x the dtype's bytes
        import torch

        from llmserve.engine.devices import resolve_dtype

        dtype = resolve_dtype("auto", torch.device("cpu"))
        assert isinstance(dtype, torch.dtype)
        per_token = 2 * 2 * 2 * 16 * dtype.itemsize
        kv_cache = {
            "budget_tokens": (1 << 20) // per_token,
            "reserved_tokens": 0,
            "held_tokens": 0,
            "bytes_per_token": per_token,
            "source": "kv_cache_memory",
        }
        loaded = {**card, "status": "loaded", "memory_bytes": footprint(tiny_dir2), "kv_cache": kv_cache}
        never = {**card, "status": "unloaded", "memory_bytes": None, "kv_cache": None}
        assert body == {
            "object": "list",
            "data": [{"id": "default", **loaded}, {"id": "org/tiny", **never}, {"id": "tiny2", **loaded}],
        }
        one = client.get("/v1/models/org/tiny")
        assert one.status_code == 200
        assert one.json() == {"id": "org/tiny", **never}
        assert_schema("Model", one.json())
        for path in ("/v1/models/org/none", "/v1/models/%2E%2E/%2E%2E/etc/passwd", f"/v1/models/{tiny_dir}"):
            missing = client.get(path)  # ids reach nothing but the configured models
            assert missing.status_code == 404
            assert missing.json()["error"]["code"] == "model_not_found"
        assert client.get("/health").json() == {"status": "ok"}


def test_unload_reload_status_exact_json_and_auto_reload(tiny_dir: Path, tiny_dir2: Path) -> None:
    factory = Factory(load_engine)
    app = create_app(
        [plain(tiny_dir, "tiny"), plain(tiny_dir2, "tiny2")], "tiny", factory=factory, preload="none"
    )
    with TestClient(app) as client:
        assert manage(client, "status", "tiny").json() == {"model_id": "tiny", "status": "unloaded"}
        assert manage(client, "reload", "tiny").json() == {"model_id": "tiny", "status": "loaded"}
        assert manage(client, "status", "default").json() == {"model_id": "tiny", "status": "loaded"}
        assert manage(client, "unload", "tiny").json() == {"model_id": "tiny", "status": "unloaded"}
        assert manage(client, "status", "tiny").json() == {"model_id": "tiny", "status": "unloaded"}
        # A request for the unloaded model reloads it first.
        assert chat(client, "tiny").status_code == 200
        assert manage(client, "status", "tiny").json() == {"model_id": "tiny", "status": "loaded"}
        assert factory.loads == ["tiny", "tiny"]
        # Every model can be unloaded, the last one included, and comes back on demand.
        for model in ("tiny", "tiny2"):
            assert manage(client, "unload", model).json() == {"model_id": model, "status": "unloaded"}
        assert [m["status"] for m in client.get("/v1/models").json()["data"]] == ["unloaded"] * 3
        assert chat(client).status_code == 200
        for action in ("unload", "reload", "status"):
            response = manage(client, action, "nope")
            assert response.status_code == 404
            assert response.json()["error"] == {
                "message": "The model 'nope' does not exist. Available models: default, tiny, tiny2.",
                "type": "invalid_request_error",
                "param": "model",
                "code": "model_not_found",
            }
        bad = client.post("/v1/models/unload", json={"model": "tiny"})
        assert bad.status_code == 400
        assert bad.json()["error"]["param"] in ("model_id", "model")


def test_status_speaks_the_seeds_whole_vocabulary() -> None:
    """Each status the seed defines, as it arises here: `unloaded` (never loaded), `reloading` (a load
    under way, with its progress), `loaded`, `internal_error` (the load failed), `not_found` (no such
    id: a 404 that is both OpenAI's error and the seed's answer). `no_loader_config` cannot arise
    (docs/api.md): every registered model has its loader spec."""
    gate = threading.Event()

    def make(config: ModelConfig) -> ScriptedEngine:
        if config.api_id == "broken":
            raise RuntimeError("no weights here")
        if config.api_id == "slow":
            gate.wait(10)
        return ScriptedEngine(["a"])

    models = [ModelConfig(name, name, PlainSpec(model_id=name)) for name in ("m", "slow", "broken")]
    app = create_app(models, "m", factory=Factory(make), preload="none")
    with TestClient(app) as client:

        def status(model_id: str) -> tuple[int, Any]:
            response = manage(client, "status", model_id)
            return response.status_code, response.json()

        assert status("m") == (200, {"model_id": "m", "status": "unloaded"})
        assert manage(client, "reload", "m").status_code == 200
        assert status("m") == (200, {"model_id": "m", "status": "loaded"})
        assert status("default") == (200, {"model_id": "m", "status": "loaded"})
        assert manage(client, "reload", "broken").status_code == 500
        assert status("broken") == (200, {"model_id": "broken", "status": "internal_error"})
        loading = threading.Thread(target=manage, args=(client, "reload", "slow"))
        loading.start()
        wait_status(client, "slow", "reloading")
        code, body = status("slow")
        assert (
            code == 200 and body["status"] == "reloading" and list(body) == ["model_id", "status", "progress"]
        )
        gate.set()
        loading.join(10)
        assert status("slow") == (200, {"model_id": "slow", "status": "loaded"})
        for unknown in ("nope", "m@7"):
            code, body = status(unknown)
            missing = f"The model '{unknown}' does not exist. Available models: default, m, slow, broken."
            assert (code, body) == (
                404,
                {
                    "model_id": unknown,
                    "status": "not_found",
                    "error": {
                        "message": missing,
                        "type": "invalid_request_error",
                        "param": "model",
                        "code": "model_not_found",
                    },
                },
            )
            assert_schema("ErrorResponse", body)


def test_failed_load_is_500_model_load_failed_and_the_next_request_retries(
    tiny_dir: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_dir, broken)
    (broken / "config.json").write_text("{ not json")
    app = create_app([plain(broken, "broken"), plain(tiny_dir, "tiny")], "broken", preload="none")
    with TestClient(app) as client:
        for stream in (False, True):
            response = chat(client, "broken", stream=stream)
            assert response.status_code == 500
            error = response.json()["error"]
            assert error["message"].startswith("loading model 'broken' failed: ")
            assert (error["type"], error["param"], error["code"]) == (
                "server_error",
                None,
                "model_load_failed",
            )
        assert manage(client, "status", "broken").json() == {"model_id": "broken", "status": "internal_error"}
        assert manage(client, "reload", "broken").status_code == 500
        assert chat(client, "tiny").status_code == 200  # other models are untouched
        shutil.copy(tiny_dir / "config.json", broken / "config.json")
        assert chat(client, "broken").status_code == 200
        assert manage(client, "status", "broken").json() == {"model_id": "broken", "status": "loaded"}


def test_unload_drops_every_reference_to_the_weights(tiny_dir: Path) -> None:
    factory = Factory(load_engine)
    app = create_app([plain(tiny_dir, "tiny")], "tiny", factory=factory, preload="none")
    with TestClient(app) as client:
        assert chat(client).status_code == 200
        engine = factory.engines[0]
        assert isinstance(engine, HFEngine)
        weights = weakref.ref(engine.model)
        assert weights() is not None
        manage(client, "unload", "tiny")
        gc.collect()
        assert weights() is None


def test_unload_gives_the_memory_back_to_the_os(tmp_path: Path) -> None:
    big = build_model(tmp_path / "big", hidden=512, layers=8)  # about 90 MB of float32 weights
    size = (big / "model.safetensors").stat().st_size
    # float32, the checkpoint's own size (torch's bfloat16 kernels also keep workspaces of their own)
    app = create_app([plain(big, "big", dtype="float32")], "big", preload="none")
    with TestClient(app) as client:
        gc.collect()
        trim_process_memory()
        before = resident_bytes()
        assert before is not None
        assert chat(client, "big").status_code == 200  # loads it and touches every weight
        loaded = resident_bytes()
        assert loaded is not None and loaded - before > 0.8 * size
        manage(client, "unload", "big")
        after = resident_bytes()
        assert after is not None
        assert after - before < 0.25 * size, (before, loaded, after, size)


def test_concurrent_first_requests_cause_exactly_one_load(tiny_dir: Path) -> None:
    factory = Factory(load_engine)
    app = create_app([plain(tiny_dir, "tiny")], "tiny", factory=factory, preload="none")

    async def burst(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            body = {"messages": USER, "max_tokens": 4}
            return await asyncio.gather(*(http.post("/v1/chat/completions", json=body) for _ in range(8)))

    with live_server(app) as url:
        responses = asyncio.run(burst(url))
    assert [r.status_code for r in responses] == [200] * 8
    assert factory.loads == ["tiny"]


@pytest.fixture(scope="module")
def long_answer(tiny_dir: Path) -> None:
    """Greedy on `USER` runs 200 tokens without an EOS, so the tests below can cut it short."""
    assert not reference_greedy(tiny_dir, USER, 200)[3]


def _slow_factory(delay: float) -> Factory:
    return Factory(lambda config: Slowed(load_engine(config), delay))


async def _stream_lines(http: httpx.AsyncClient, body: dict[str, Any]) -> Any:
    return http.stream("POST", "/v1/chat/completions", json={"messages": USER, "stream": True, **body})


def test_unload_during_a_stream_lets_it_finish_then_frees(tiny_dir: Path, long_answer: None) -> None:
    factory = _slow_factory(0.02)
    app = create_app([plain(tiny_dir, "tiny")], "tiny", factory=factory, preload="none")

    async def scenario(url: str) -> tuple[list[dict[str, Any]], dict[str, Any], float, float]:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            body = {
                "messages": USER,
                "stream": True,
                "max_tokens": 40,
                "temperature": 0,  # greedy: this model reaches no EOS within 200 tokens
                "stream_options": {"include_usage": True},
            }
            async with http.stream("POST", "/v1/chat/completions", json=body) as response:
                lines = response.aiter_lines()
                chunks: list[dict[str, Any]] = []
                unload: asyncio.Task[httpx.Response] | None = None
                async for line in lines:
                    if not line.startswith("data: "):
                        continue
                    if line == "data: [DONE]":
                        break
                    chunks.append(json.loads(line[6:]))
                    if unload is None:
                        unload = asyncio.create_task(
                            http.post("/v1/models/unload", json={"model_id": "tiny"})
                        )
                        await asyncio.sleep(0.1)
                        assert not unload.done()
                stream_end = time.monotonic()
            assert unload is not None
            unloaded = await unload
            return chunks, unloaded.json(), stream_end, time.monotonic()

    with live_server(app) as url:
        chunks, unloaded, stream_end, unload_end = asyncio.run(scenario(url))
        assert unloaded == {"model_id": "tiny", "status": "unloaded"}
        assert chunks[-2]["choices"][0]["finish_reason"] == "length"
        assert chunks[-1]["usage"]["completion_tokens"] == 40  # nothing was cut short
        assert unload_end >= stream_end
        response = httpx.post(
            f"{url}/v1/chat/completions", json={"messages": USER, "max_tokens": 2}, timeout=60
        )
        assert response.status_code == 200
    assert factory.loads == ["tiny", "tiny"]


def test_client_disconnect_cancels_the_generation(tiny_dir: Path, long_answer: None) -> None:
    factory = _slow_factory(0.02)
    app = create_app([plain(tiny_dir, "tiny")], "tiny", factory=factory, preload="none")

    async def scenario(url: str) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            body = {"messages": USER, "stream": True, "max_tokens": 200, "temperature": 0}
            async with http.stream("POST", "/v1/chat/completions", json=body) as response:
                async for line in response.aiter_lines():
                    if line.startswith("data: ") and '"content":"' in line and '"role"' not in line:
                        break  # one token arrived: hang up

    with live_server(app) as url:
        asyncio.run(scenario(url))
        assert_cancelled(factory.engines[0], max_steps=100)


@pytest.mark.parametrize("path", ["/v1/models/unload", "/v1/models/reload", "/v1/models/status"])
def test_model_management_bad_bodies(tiny_dir: Path, path: str) -> None:
    app = create_app([plain(tiny_dir, "tiny")], "tiny", preload="none")
    with TestClient(app) as client:
        response = client.post(path, content=b"nope")
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_request"
        response = client.post(path, json={"model_id": 3})
        assert response.status_code == 400
        assert response.json()["error"] == {
            "message": "invalid value for 'model_id': Input should be a valid string",
            "type": "invalid_request_error",
            "param": "model_id",
            "code": "invalid_request",
        }


def test_client_disconnect_cancels_a_non_streamed_generation(tiny_dir: Path, long_answer: None) -> None:
    factory = _slow_factory(0.02)
    app = create_app([plain(tiny_dir, "tiny")], "tiny", factory=factory, preload="none")
    with live_server(app) as url:
        httpx.post(f"{url}/v1/models/reload", json={"model_id": "tiny"}, timeout=60).raise_for_status()
        body = {"messages": USER, "max_tokens": 200, "temperature": 0}
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/v1/chat/completions", json=body, timeout=httpx.Timeout(60, read=0.5))
        assert_cancelled(factory.engines[0], max_steps=100)
