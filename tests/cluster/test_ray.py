"""`llmserve ray` on a real local Ray cluster (started by the command itself): two replicas, two tiny
models, one model per replica. Both models answer, streamed and not, on /v1 and /v2; each response names
its replica; a model's requests keep landing on the replica that loaded it, and with one model per
replica neither replica swaps; /v1/models merges both replicas; a replica killed (as the OOM killer
would) is replaced by Ray while the next requests succeed. One cluster for the whole module."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from model_configs import write_config
from servers import free_port
from wire import sse_data

pytest.importorskip("ray.serve")

MODELS = ("tiny-a", "tiny-b")
HEADER = "x-llmserve-replica"
REPLICA_TITLE = "ray::ServeReplica:llmserve:Replica"


@pytest.fixture(scope="module")
def cluster(tiny_dir: Path, tiny_dir2: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    config = write_config(tmp_path_factory.mktemp("ray"), {"tiny-a": tiny_dir, "tiny-b": tiny_dir2})
    port = free_port()
    command = [sys.executable, "-m", "llmserve", "--log-level", "warning", "ray", "--config", str(config)]
    command += ["--replicas", "2", "--models-per-replica", "1", "--port", str(port)]
    # no usage report to Ray's servers from a test run (the network is closed here anyway)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    process = subprocess.Popen(command, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while len(replicas_listed(base)) < 2:
            assert process.poll() is None, "llmserve ray exited"
            assert time.monotonic() < deadline, "the Ray application did not come up"
            time.sleep(0.5)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)  # removes the application and stops the cluster it started
        try:
            assert process.wait(90) == 0
        finally:
            if process.poll() is None:
                process.kill()


def replicas_listed(base: str) -> set[str]:
    try:
        response = httpx.get(f"{base}/v1/models", timeout=10)
    except httpx.TransportError:
        return set()
    if response.status_code != 200:
        return set()
    return {r for card in response.json()["data"] for r in card.get("replicas", {})}


def chat(base: str, model: str, **extra: object) -> httpx.Response:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 8,
        "temperature": 0,
    }
    return httpx.post(f"{base}/v1/chat/completions", json={**body, **extra}, timeout=120)


def loaded_on(base: str) -> dict[str, list[str]]:
    """Replica -> the models loaded there, from the merged /v1/models."""
    found: dict[str, list[str]] = {}
    for card in httpx.get(f"{base}/v1/models", timeout=10).json()["data"]:
        for replica, status in card["replicas"].items():
            found.setdefault(replica, [])
            if status == "loaded" and card["id"] != "default":
                found[replica].append(card["id"])
    return found


def test_both_models_answer_streamed_and_not(cluster: str) -> None:
    served: dict[str, str] = {}
    for model in MODELS:
        response = chat(cluster, model)
        assert response.status_code == 200, response.text
        text = response.json()["choices"][0]["message"]["content"]
        served[model] = response.headers[HEADER]
        with httpx.stream(
            "POST", f"{cluster}/v1/chat/completions", timeout=120,
            json={"model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8,
                  "temperature": 0, "stream": True},
        ) as stream:  # fmt: skip
            assert stream.status_code == 200 and stream.headers[HEADER] == served[model]
            events = sse_data(stream.read().decode())
        assert events[-1] == "[DONE]"
        pieces = [
            json.loads(e)["choices"][0]["delta"].get("content") or ""
            for e in events[:-1]
            if json.loads(e)["choices"]
        ]
        assert "".join(pieces) == text  # greedy: the same answer, streamed
        v2 = httpx.post(
            f"{cluster}/v2/models/{model}/generate",
            json={"text_input": "hello", "parameters": {"max_tokens": 4}},
            timeout=120,
        )
        assert v2.status_code == 200 and v2.json()["model_name"] == model
        assert v2.headers[HEADER] == served[model]  # the V2 route names its model in the path
    assert served["tiny-a"] != served["tiny-b"]  # one model per replica: the second went to the other one


def test_a_stream_streams_through_the_ingress(cluster: str) -> None:
    body = {"model": "tiny-a", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 150,
            "ignore_eos": True, "stream": True}  # fmt: skip
    arrivals: list[float] = []
    with httpx.stream("POST", f"{cluster}/v1/chat/completions", json=body, timeout=120) as stream:
        for line in stream.iter_lines():
            if line.startswith("data: "):
                arrivals.append(time.monotonic())
    assert len(arrivals) > 20  # fewer chunks than tokens: bytes that are no character yet wait for the next
    # the first pieces arrive while the model still writes the rest, not all at once at the end
    assert arrivals[-1] - arrivals[0] > 0.3


def test_a_model_keeps_its_replica_and_no_replica_swaps(cluster: str) -> None:
    chat(cluster, "tiny-a"), chat(cluster, "tiny-b")
    before = loaded_on(cluster)
    assert sorted(sorted(models) for models in before.values()) == [["tiny-a"], ["tiny-b"]]
    home = {model: replica for replica, models in before.items() for model in models}
    for _ in range(4):
        for model in MODELS:
            response = chat(cluster, model)
            assert response.status_code == 200 and response.headers[HEADER] == home[model]
    assert loaded_on(cluster) == before  # nothing was unloaded and loaded again (no ping-pong)


def test_models_lists_every_replica(cluster: str) -> None:
    response = httpx.get(f"{cluster}/v1/models", timeout=10)
    assert response.status_code == 200
    ids = [card["id"] for card in response.json()["data"]]
    assert ids == ["default", *MODELS]
    replicas = set(response.headers[HEADER].split(","))
    assert len(replicas) == 2
    for card in response.json()["data"]:
        assert set(card["replicas"]) == replicas
        assert card["status"] == ("loaded" if "loaded" in card["replicas"].values() else "unloaded")


def test_a_killed_replica_is_replaced_and_requests_go_on(cluster: str) -> None:
    before = replicas_listed(cluster)
    [victim, *_] = [
        p for p in psutil.process_iter(["cmdline"]) if (p.info["cmdline"] or [""])[0] == REPLICA_TITLE
    ]
    victim.kill()  # as the OOM killer would
    for _ in range(3):
        for model in MODELS:
            response = chat(cluster, model)
            assert response.status_code == 200, response.text
    deadline = time.monotonic() + 60
    while not (len(now := replicas_listed(cluster)) == 2 and now - before):
        assert time.monotonic() < deadline, f"Ray did not replace the killed replica: {now}"
        time.sleep(0.5)
    for model in MODELS:
        assert chat(cluster, model).status_code == 200
