"""The Open Inference Protocol (V2) against a live server, written from Triton's model-repository
extension document and KServe's rest_predict_v2.yaml (../shared/specs): server metadata and health,
model metadata and readiness, the repository index and load/unload, `{"error"}` bodies, URL-encoded
names, and one registry shared with /v1."""

from __future__ import annotations

import threading

import httpx
import jsonschema
import pytest
from app_calls import HELLO, index
from fakes import Factory, ScriptedEngine
from model_configs import model
from scripted_app import v2_server
from wire import assert_kserve

from llmserve import __version__

ERROR_SCHEMA = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}


def test_server_metadata_and_health() -> None:
    with v2_server(model("m")) as (base, _):
        for path in ("/v2", "/v2/"):
            body = httpx.get(base + path).json()
            assert body == {
                "name": "llmserve",
                "version": __version__,
                "extensions": ["model_repository", "generate", "metrics"],
            }
            assert_kserve("metadata_server_response", body)
        assert httpx.get(f"{base}/v2/health/live").status_code == 200
        assert httpx.get(f"{base}/v2/health/ready").status_code == 200  # models load on demand


def test_model_metadata_and_readiness() -> None:
    with v2_server(model("m")) as (base, _):
        body = httpx.get(f"{base}/v2/models/m").json()
        assert body == {
            "name": "m",
            "versions": ["1"],
            "platform": "llmserve_transformers",
            "inputs": [{"name": "text_input", "datatype": "BYTES", "shape": [1]}],
            "outputs": [{"name": "text_output", "datatype": "BYTES", "shape": [1]}],
        }
        assert_kserve("metadata_model_response", body)
        assert httpx.get(f"{base}/v2/models/m/versions/1").json() == body
        assert httpx.get(f"{base}/v2/models/m/ready").status_code == 400  # not loaded: not ready
        assert httpx.get(f"{base}/v2/models/m/versions/1/ready").status_code == 400
        assert httpx.post(f"{base}/v2/repository/models/m/load").status_code == 200
        ready = httpx.get(f"{base}/v2/models/m/versions/1/ready")
        assert ready.status_code == 200 and ready.json() == {"name": "m", "version": "1", "ready": True}
        for path in ("/v2/models/nope", "/v2/models/nope/ready", "/v2/models/m/versions/7"):
            missing = httpx.get(base + path)
            assert missing.status_code == 404
            jsonschema.validate(missing.json(), ERROR_SCHEMA)
            assert list(missing.json()) == ["error"]


def test_index_load_unload_and_reload() -> None:
    with v2_server(model("a"), model("b")) as (base, factory):
        assert index(base) == [
            {"name": "a", "version": "1", "state": "UNAVAILABLE", "reason": "unloaded"},
            {"name": "b", "version": "1", "state": "UNAVAILABLE", "reason": "unloaded"},
        ]
        assert index(base, ready=True) == []
        load = httpx.post(f"{base}/v2/repository/models/a/load", json={})
        assert (load.status_code, load.content) == (200, b"")
        assert index(base, ready=True) == [{"name": "a", "version": "1", "state": "READY", "reason": ""}]
        assert httpx.post(f"{base}/v2/repository/models/a/load").status_code == 200  # loaded: reloads
        assert factory.loads == ["a", "a"]
        unload = httpx.post(
            f"{base}/v2/repository/models/a/unload", json={"parameters": {"unload_dependents": False}}
        )
        assert (unload.status_code, unload.content) == (200, b"")
        assert index(base)[0] == {"name": "a", "version": "1", "state": "UNAVAILABLE", "reason": "unloaded"}
        for path in ("/v2/repository/models/nope/load", "/v2/repository/models/nope/unload"):
            missing = httpx.post(base + path)
            assert missing.status_code == 404 and list(missing.json()) == ["error"]
        bad = httpx.post(f"{base}/v2/repository/index", json={"ready": "yes"})
        assert bad.status_code == 400 and bad.json() == {"error": "'ready' must be true or false"}
        bad = httpx.post(f"{base}/v2/repository/models/a/unload", json={"parameters": {"force": True}})
        assert bad.status_code == 400 and bad.json() == {"error": "unknown parameter(s): force"}


def test_a_failed_load_is_a_400_with_the_reason_and_shows_in_the_index() -> None:
    factory = Factory(lambda c: ScriptedEngine(["a"]), fail_with=RuntimeError("disk on fire"))
    with v2_server(model("a"), factory=factory) as (base, _):
        response = httpx.post(f"{base}/v2/repository/models/a/load")
        assert response.status_code == 400
        assert response.json() == {
            "error": "failed to load 'a': loading model 'a' failed: RuntimeError: disk on fire"
        }
        assert index(base) == [
            {"name": "a", "version": "1", "state": "UNAVAILABLE", "reason": "RuntimeError: disk on fire"}
        ]


def test_loading_shows_in_the_index() -> None:
    gate = threading.Event()
    factory = Factory(lambda c: ScriptedEngine(["a"]), load_gate=gate)
    with v2_server(model("a"), factory=factory) as (base, _):
        loading = threading.Thread(
            target=lambda: httpx.post(f"{base}/v2/repository/models/a/load", timeout=30)
        )
        loading.start()
        while index(base)[0]["state"] != "LOADING":
            pass
        gate.set()
        loading.join(30)
        assert index(base)[0]["state"] == "READY"


def test_names_with_a_slash_work_url_encoded() -> None:
    with v2_server(model("org/a")) as (base, _):
        assert httpx.post(f"{base}/v2/repository/models/org%2Fa/load").status_code == 200
        assert httpx.get(f"{base}/v2/models/org%2Fa/ready").status_code == 200
        assert httpx.get(f"{base}/v2/models/org/a/ready").status_code == 200
        assert httpx.get(f"{base}/v2/models/org%2Fa").json()["name"] == "org/a"
        assert httpx.post(f"{base}/v2/repository/models/org%2Fa/unload").status_code == 200
        assert index(base)[0]["state"] == "UNAVAILABLE"


def test_v1_and_v2_are_one_registry() -> None:
    with v2_server(model("a")) as (base, factory):
        assert httpx.post(f"{base}/v1/chat/completions", json={**HELLO, "model": "a"}).status_code == 200
        assert index(base)[0]["state"] == "READY"
        assert httpx.post(f"{base}/v2/repository/models/a/unload").status_code == 200
        status = httpx.post(f"{base}/v1/models/status", json={"model_id": "a"}).json()
        assert status == {"model_id": "a", "status": "unloaded"}
        generated = httpx.post(f"{base}/v2/models/a/generate", json={"text_input": "hi"})  # auto-reloads
        assert generated.json() == {"model_name": "a", "model_version": "1", "text_output": "ab"}
        assert factory.loads == ["a", "a"]
        assert httpx.post(f"{base}/v1/models/unload", json={"model_id": "a"}).status_code == 200
        assert index(base)[0]["state"] == "UNAVAILABLE"


@pytest.mark.parametrize("path", ["/v2/nothing", "/v2/repository/models/a/bogus"])
def test_unknown_v2_routes_are_404_in_the_v2_shape(path: str) -> None:
    with v2_server(model("a")) as (base, _):
        response = httpx.post(base + path)
        assert response.status_code == 404 and list(response.json()) == ["error"]
