"""The Gateway API Inference Extension's model-server protocol on /metrics: pod-wide gauges of waiting and
running requests and of KV cache utilisation, and the LoRA info metric listing the models in memory (so
the endpoint picker routes a request to a pod that already holds its model)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
from fakes import Factory, ScriptedEngine
from model_configs import model, plain
from prometheus_client.parser import text_string_to_metric_families
from servers import live_server
from starlette.testclient import TestClient

from llmserve.models.residency import Residency
from llmserve.server import create_app

HI = [{"role": "user", "content": "hi"}]


def scrape(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample of the `llmserve:` families: name -> [(labels, value)]."""
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("llmserve:"):
                found.setdefault(sample.name, []).append((sample.labels, float(sample.value)))
    return found


def gauge(samples: dict[str, list[tuple[dict[str, str], float]]], name: str) -> float:
    [(labels, value)] = samples[name]
    assert labels == {}
    return value


def lora_info(samples: dict[str, list[tuple[dict[str, str], float]]]) -> tuple[dict[str, str], float]:
    [(labels, value)] = samples["llmserve:lora_requests_info"]
    return labels, value


def test_the_models_in_memory_are_the_running_adapters() -> None:
    factory = Factory(lambda config: ScriptedEngine(["x"]))
    app = create_app([model("a"), model("b")], "a", factory=factory, preload="none")
    with TestClient(app) as client:
        samples = scrape(client.get("/metrics").text)
        assert gauge(samples, "llmserve:num_requests_waiting") == 0
        assert gauge(samples, "llmserve:num_requests_running") == 0
        assert gauge(samples, "llmserve:kv_cache_usage_perc") == 0
        labels, before = lora_info(samples)
        # no limit on the models in memory: every model of the config fits
        assert labels == {"max_lora": "2", "running_lora_adapters": "", "waiting_lora_adapters": ""}
        assert client.post("/v1/chat/completions", json={"model": "b", "messages": HI}).status_code == 200
        labels, after_b = lora_info(scrape(client.get("/metrics").text))
        assert labels["running_lora_adapters"] == "b" and after_b > before
        assert client.post("/v1/models/reload", json={"model_id": "a"}).status_code == 200
        labels, _ = lora_info(scrape(client.get("/metrics").text))
        assert labels["running_lora_adapters"] == "a,default,b"  # `default` names a too
        client.post("/v1/models/unload", json={"model_id": "b"})
        labels, _ = lora_info(scrape(client.get("/metrics").text))
        assert labels["running_lora_adapters"] == "a,default"


def test_max_lora_is_the_limit_on_models_in_memory() -> None:
    app = create_app([model("a"), model("b")], "a", factory=Factory(lambda c: ScriptedEngine(["x"])),
                     preload="none", residency=Residency(1))  # fmt: skip
    with TestClient(app) as client:
        labels, _ = lora_info(scrape(client.get("/metrics").text))
        assert labels["max_lora"] == "1"


def test_a_request_waiting_for_a_load_counts_as_waiting() -> None:
    gate = threading.Event()
    factory = Factory(lambda config: ScriptedEngine(["x"]), load_gate=gate)
    app = create_app([model("a"), model("b")], "a", factory=factory, preload="none")
    with live_server(app) as base:
        body = {"model": "b", "messages": HI}
        request = threading.Thread(
            target=httpx.post, args=(f"{base}/v1/chat/completions",), kwargs={"json": body}
        )
        request.start()
        try:
            deadline = time.monotonic() + 10
            while True:
                samples = scrape(httpx.get(f"{base}/metrics").text)
                if gauge(samples, "llmserve:num_requests_waiting") == 1:
                    break
                assert time.monotonic() < deadline
                time.sleep(0.02)
            labels, _ = lora_info(samples)
            assert labels["waiting_lora_adapters"] == "b" and labels["running_lora_adapters"] == ""
        finally:
            gate.set()
            request.join(30)
        labels, _ = lora_info(scrape(httpx.get(f"{base}/metrics").text))
        assert labels["waiting_lora_adapters"] == "" and labels["running_lora_adapters"] == "b"


def test_kv_utilisation_follows_the_running_requests(tiny_dir: Path) -> None:
    app = create_app([plain(tiny_dir, "tiny")], "tiny", preload="default")
    body = {"model": "tiny", "messages": HI, "max_tokens": 200, "stream": True, "ignore_eos": True}
    with live_server(app) as base, httpx.Client(base_url=base, timeout=60) as http:
        with http.stream("POST", "/v1/chat/completions", json=body) as response:
            next(response.iter_raw())  # running now
            text = http.get("/metrics").text
        samples = scrape(text)
        assert gauge(samples, "llmserve:num_requests_running") == 1
        used = gauge(samples, "llmserve:kv_cache_usage_perc")
        per_model = next(
            s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.name == "llmserve_kv_cache_utilisation"
        )
        assert 0 < used == per_model <= 1
        deadline = time.monotonic() + 10
        while gauge(scrape(http.get("/metrics").text), "llmserve:kv_cache_usage_perc") != 0:
            assert time.monotonic() < deadline, "the reservation outlived its request"
            time.sleep(0.05)


def test_open_metrics_lets_a_scraper_without_a_key_read_metrics_only() -> None:
    """The endpoint picker's metrics data source sends no credentials: `--open-metrics` opens /metrics
    (and nothing else) on a server with API keys."""
    from llmserve.cli import build_parser, server_options
    from llmserve.server import ServerOptions

    args = build_parser().parse_args(
        ["multi-model", "--config", "c.json", "--api-key", "k", "--open-metrics"]
    )
    assert server_options(args).open_metrics
    for open_metrics, status in ((False, 401), (True, 200)):
        options = ServerOptions(api_keys=("k",), open_metrics=open_metrics)
        app = create_app([model("a")], "a", factory=Factory(lambda c: ScriptedEngine(["x"])), options=options)
        with TestClient(app) as client:
            assert client.get("/metrics").status_code == status
            assert client.get("/v1/models").status_code == 401
