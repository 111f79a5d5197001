"""V2 inference on a real tiny model: Triton's generate and generate_stream, KServe's infer; the same text
as /v1 at temperature 0; parameters checked; models registered at run time (--allow-runtime-models,
--model-root); GET /metrics in Prometheus format."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from app_calls import index
from model_configs import plain
from prometheus_client.parser import text_string_to_metric_families
from servers import live_server
from starlette.applications import Starlette
from wire import assert_kserve, sse_data

from llmserve.config.runtime import RuntimeModels
from llmserve.server import create_app

GREEDY = {"temperature": 0, "max_tokens": 8}


@pytest.fixture(scope="module")
def server(tiny_dir: Path) -> Iterator[str]:
    app = create_app([plain(tiny_dir, "tiny")], "tiny", preload="none")
    with live_server(app) as base:
        yield base


def v1_text(base: str) -> str:
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hello there"}], **GREEDY}
    return str(
        httpx.post(f"{base}/v1/chat/completions", json=body, timeout=60).json()["choices"][0]["message"][
            "content"
        ]
    )


def test_generate_answers_like_v1(server: str) -> None:
    response = httpx.post(
        f"{server}/v2/models/tiny/generate",
        json={"text_input": "hello there", "parameters": GREEDY},
        timeout=60,
    )
    assert response.status_code == 200
    assert response.json() == {"model_name": "tiny", "model_version": "1", "text_output": v1_text(server)}
    versioned = httpx.post(
        f"{server}/v2/models/tiny/versions/1/generate",
        json={"text_input": "hello there", "parameters": GREEDY},
    )
    assert versioned.json() == response.json()


def test_generate_stream_pieces_add_up(server: str) -> None:
    response = httpx.post(
        f"{server}/v2/models/tiny/generate_stream",
        json={"text_input": "hello there", "parameters": GREEDY},
        timeout=60,
    )
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(d) for d in sse_data(response.text)]
    assert all(e["model_name"] == "tiny" and e["model_version"] == "1" for e in events)
    assert "".join(e["text_output"] for e in events) == v1_text(server)
    assert events[-1]["text_output"] == "" and events[-1]["finish_reason"] == "length"
    assert all("finish_reason" not in e for e in events[:-1])


def test_infer_with_a_bytes_tensor(server: str) -> None:
    request = {
        "id": "42",
        "inputs": [{"name": "text_input", "shape": [1], "datatype": "BYTES", "data": ["hello there"]}],
        "parameters": GREEDY,
    }
    assert_kserve("inference_request", request)
    response = httpx.post(f"{server}/v2/models/tiny/infer", json=request, timeout=60)
    body = response.json()
    assert_kserve("inference_response", body)
    assert body == {
        "model_name": "tiny",
        "model_version": "1",
        "id": "42",
        "outputs": [{"name": "text_output", "datatype": "BYTES", "shape": [1], "data": [v1_text(server)]}],
    }


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("generate", {"parameters": GREEDY}, "'text_input' must be a non-empty string"),
        ("generate", {"text_input": "x", "parameters": {"beam_width": 2}}, "unknown parameter(s) beam_width"),
        (
            "generate",
            {"text_input": "x", "parameters": {"temperature": 3}},
            "parameters.temperature must be a number from 0 to 2",
        ),
        (
            "generate",
            {"text_input": "x", "parameters": {"stop": 5}},
            "parameters.stop must be a string or a list of strings",
        ),
        (
            "generate",
            {"text_input": "x", "parameters": {"max_tokens": -1}},
            "parameters.max_tokens must be a whole number (0 or more)",
        ),
        ("generate_stream", {"text_input": ""}, "'text_input' must be a non-empty string"),
        (
            "infer",
            {"inputs": [{"name": "other", "datatype": "BYTES", "shape": [1], "data": ["x"]}]},
            "'inputs' needs one BYTES tensor named text_input",
        ),
        ("infer", {"inputs": "x"}, "'inputs' must be a list of tensors"),
    ],
)
def test_bad_inference_requests_are_400s(
    server: str, path: str, body: dict[str, object], message: str
) -> None:
    response = httpx.post(f"{server}/v2/models/tiny/{path}", json=body)
    assert response.status_code == 400
    assert list(response.json()) == ["error"] and response.json()["error"].startswith(message)


def test_metrics_in_prometheus_format(server: str) -> None:
    httpx.post(
        f"{server}/v2/models/tiny/generate", json={"text_input": "hi", "parameters": GREEDY}, timeout=60
    )
    response = httpx.get(f"{server}/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    labels = {"model": "tiny", "version": "1"}
    GENERATE = "/v2/models/{name:path}/generate"  # the route's path template, not the model's name

    def value(family: str, sample: str, **extra: str) -> float:
        for s in families[family].samples:
            if s.name == sample and s.labels == {**labels, **extra}:
                return float(s.value)
        raise AssertionError(f"no {sample} {extra}")

    assert value("llmserve_model_loads", "llmserve_model_loads_total") == 1
    assert value("llmserve_model_state", "llmserve_model_state", state="loaded") == 1
    assert value("llmserve_model_state", "llmserve_model_state", state="unloaded") == 0
    assert value("llmserve_model_load_seconds", "llmserve_model_load_seconds_count") == 1
    assert value("llmserve_requests", "llmserve_requests_total", endpoint=GENERATE) >= 1
    assert value("llmserve_generation_tokens", "llmserve_generation_tokens_total", endpoint=GENERATE) >= 8
    assert value("llmserve_prompt_tokens", "llmserve_prompt_tokens_total", endpoint=GENERATE) > 0
    assert (
        value(
            "llmserve_time_to_first_token_seconds",
            "llmserve_time_to_first_token_seconds_count",
            endpoint=GENERATE,
        )
        >= 1
    )
    assert (
        value(
            "llmserve_request_duration_seconds", "llmserve_request_duration_seconds_count", endpoint=GENERATE
        )
        >= 1
    )
    assert value("llmserve_model_memory_bytes", "llmserve_model_memory_bytes") > 0
    assert value("llmserve_queue_depth", "llmserve_queue_depth") == 0
    assert value("llmserve_running_sequences", "llmserve_running_sequences") == 0
    assert value("llmserve_kv_cache_tokens", "llmserve_kv_cache_tokens", kind="budget") > 0
    assert value("llmserve_kv_cache_tokens", "llmserve_kv_cache_tokens", kind="reserved") == 0
    assert value("llmserve_kv_cache_tokens", "llmserve_kv_cache_tokens", kind="held") == 0
    assert value("llmserve_kv_cache_utilisation", "llmserve_kv_cache_utilisation") == 0
    httpx.post(f"{server}/v2/repository/models/tiny/unload")
    text = httpx.get(f"{server}/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert value("llmserve_model_unloads", "llmserve_model_unloads_total", reason="unload") == 1
    assert value("llmserve_model_memory_bytes", "llmserve_model_memory_bytes") == 0
    assert not families["llmserve_kv_cache_tokens"].samples  # only while loaded


def runtime_app(tiny_dir: Path, runtime: RuntimeModels) -> Starlette:
    return create_app([plain(tiny_dir, "first")], "first", preload="none", runtime=runtime)


def test_runtime_models_need_the_flag(tiny_dir: Path) -> None:
    app = runtime_app(tiny_dir, RuntimeModels())
    with live_server(app) as base:
        config = {"Plain": {"model_id": str(tiny_dir)}}
        response = httpx.post(
            f"{base}/v2/repository/models/new/load", json={"parameters": {"config": config}}
        )
        assert response.status_code == 403
        assert response.json() == {"error": "registering models at run time needs --allow-runtime-models"}
        assert [e["name"] for e in index(base)] == ["first"]


def test_runtime_models_register_load_and_answer(tiny_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(tiny_dir, root / "tiny-copy")
    app = runtime_app(tiny_dir, RuntimeModels(allowed=True, model_root=root))
    with live_server(app) as base:
        config = json.dumps({"Plain": {"model_id": "tiny-copy"}, "version": "3"})  # Triton sends a string
        response = httpx.post(
            f"{base}/v2/repository/models/mine/load", json={"parameters": {"config": config}}, timeout=60
        )
        assert response.status_code == 200
        assert {"name": "mine", "version": "3", "state": "READY", "reason": ""} in index(base)
        generated = httpx.post(
            f"{base}/v2/models/mine/generate", json={"text_input": "hi", "parameters": GREEDY}, timeout=60
        )
        assert generated.json()["model_version"] == "3"
        chat = httpx.post(
            f"{base}/v1/chat/completions",
            json={"model": "mine", "messages": [{"role": "user", "content": "hi"}], **GREEDY},
        )
        assert chat.json()["model"] == "mine@3"
        again = httpx.post(
            f"{base}/v2/repository/models/mine/load", json={"parameters": {"config": config}}, timeout=60
        )
        assert again.status_code == 200  # the same name and version again: replaced, not duplicated
        assert [e["name"] for e in index(base)].count("mine") == 1
        for config_value, message in [
            ({"Plain": {"model_id": str(tiny_dir)}}, "is outside --model-root"),
            ({"Plain": {"model_id": "tiny-copy"}, "dtype": "float64"}, "parameters.config: $.other.dtype"),
            ("{not json", "parameters.config is not valid JSON"),
            ([1], "parameters.config must be a model entry"),
        ]:
            bad = httpx.post(
                f"{base}/v2/repository/models/other/load", json={"parameters": {"config": config_value}}
            )
            assert bad.status_code == 400 and message in bad.json()["error"], bad.json()
        assert "other" not in [e["name"] for e in index(base)]
