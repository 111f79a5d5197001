"""Tenants on the real app (two tiny models, a keys file): model scopes as 403s in each API's own shape
and in the listings, admin rights, request and token quotas with OpenAI's x-ratelimit headers checked
against the counters, usage per key, per-tenant metrics, and the access log."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from model_configs import plain
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from llmserve.config.keys import load_keys
from llmserve.server import ServerOptions, create_app

KEYS = {
    "alice": {"key": "sk-alice", "models": ["tiny"]},
    "ops": {"key": "sk-ops", "admin": True},
    "rpm": {"key": "sk-rpm", "requests_per_minute": 3},
    "tpm": {"key": "sk-tpm", "tokens_per_minute": 50},
    "lead": {"key": "sk-lead", "models": ["tiny2"], "admin": True},
}
USER = [{"role": "user", "content": "hi"}]
LONG = {"messages": USER, "max_tokens": 20, "ignore_eos": True}
# a minute's window counts in buckets of a second, each while any part of it is in the window
RESET = re.compile(r"5\d(\.\d+)?s|1m0(\.\d+)?s|1m1s")


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def client(tiny_dir: Path, tiny_dir2: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    path = tmp_path_factory.mktemp("keys") / "keys.json"
    path.write_text(json.dumps(KEYS))
    options = ServerOptions(api_keys=("root",), keys=load_keys(path))
    models = [plain(tiny_dir, "tiny"), plain(tiny_dir2, "tiny2")]
    with TestClient(create_app(models, "tiny", preload="none", options=options)) as test_client:
        yield test_client


NOT_ALLOWED = "the key of 'alice' may not use the model 'tiny2'"
OPENAI_403 = {
    "error": {
        "message": NOT_ALLOWED,
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_allowed",
    }
}
OLLAMA_403 = {"error": NOT_ALLOWED}
ANTHROPIC_403 = {"type": "error", "error": {"type": "permission_error", "message": NOT_ALLOWED}}
INFER_INPUT = {"name": "text_input", "shape": [1], "datatype": "BYTES", "data": ["hi"]}
ANTHROPIC_BODY = {"model": "tiny2", "max_tokens": 2, "messages": USER}


@pytest.mark.parametrize(
    ("method", "path", "body", "expected"),
    [
        ("POST", "/v1/chat/completions", {"model": "tiny2", "messages": USER}, OPENAI_403),
        ("POST", "/v1/completions", {"model": "tiny2", "prompt": "hi"}, OPENAI_403),
        ("POST", "/v1/embeddings", {"model": "tiny2", "input": "hi"}, OPENAI_403),
        ("POST", "/v1/responses", {"model": "tiny2", "input": "hi"}, OPENAI_403),
        ("POST", "/v1/models/status", {"model_id": "tiny2"}, OPENAI_403),
        ("GET", "/v1/models/tiny2", None, OPENAI_403),
        ("POST", "/v1/messages", ANTHROPIC_BODY, ANTHROPIC_403),
        ("POST", "/v1/messages/count_tokens", {"model": "tiny2", "messages": USER}, ANTHROPIC_403),
        ("POST", "/api/chat", {"model": "tiny2", "messages": USER}, OLLAMA_403),
        ("POST", "/api/generate", {"model": "tiny2", "prompt": "hi"}, OLLAMA_403),
        ("POST", "/api/chat", {"model": "tiny2"}, OLLAMA_403),  # Ollama's load by an empty request
        ("POST", "/api/embed", {"model": "tiny2", "input": "hi"}, OLLAMA_403),
        ("POST", "/api/show", {"model": "tiny2"}, OLLAMA_403),
        ("POST", "/v2/models/tiny2/generate", {"text_input": "hi"}, OLLAMA_403),
        ("POST", "/v2/models/tiny2/versions/1/infer", {"inputs": [INFER_INPUT]}, OLLAMA_403),
        ("GET", "/v2/models/tiny2", None, OLLAMA_403),
        ("GET", "/v2/models/tiny2/ready", None, OLLAMA_403),
    ],
)
def test_a_model_outside_the_keys_scope_is_403_in_each_apis_shape(
    client: TestClient, method: str, path: str, body: Any, expected: dict[str, Any]
) -> None:
    response = client.request(method, path, json=body, headers=auth("sk-alice"))
    assert (response.status_code, response.json()) == (403, expected)


def test_listings_show_only_what_the_key_may_use(client: TestClient) -> None:
    def listings(key: str) -> tuple[list[str], list[str], list[str]]:
        models = client.get("/v1/models", headers=auth(key)).json()["data"]
        tags = client.get("/api/tags", headers=auth(key)).json()["models"]
        index = client.post("/v2/repository/index", headers=auth(key)).json()
        return [m["id"] for m in models], [t["name"] for t in tags], [e["name"] for e in index]

    assert listings("sk-alice") == (["default", "tiny"], ["tiny:latest"], ["tiny"])
    assert listings("sk-lead") == (["tiny2"], ["tiny2:latest"], ["tiny2"])
    assert listings("sk-ops") == (
        ["default", "tiny", "tiny2"],
        ["tiny:latest", "tiny2:latest"],
        ["tiny", "tiny2"],
    )
    missing = client.post(
        "/v1/chat/completions", json={"model": "nope", "messages": USER}, headers=auth("sk-alice")
    )
    assert missing.status_code == 404
    assert (
        missing.json()["error"]["message"]
        == "The model 'nope' does not exist. Available models: default, tiny."
    )
    ok = client.post(
        "/v1/chat/completions", json={"messages": USER, "max_tokens": 2}, headers=auth("sk-alice")
    )
    assert ok.status_code == 200 and ok.json()["model"] == "tiny"  # `default` is tiny: in its scope


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/models/unload", {"model_id": "tiny"}),
        ("POST", "/v1/models/reload", {"model_id": "tiny"}),
        ("POST", "/v1/models/promote", {"model_id": "tiny", "version": "1"}),
        ("POST", "/v2/repository/models/tiny/load", None),
        ("POST", "/v2/repository/models/tiny/unload", None),
        ("POST", "/api/chat", {"model": "tiny", "keep_alive": 0}),  # Ollama's unload
        ("GET", "/admin/usage", None),
        ("POST", "/admin/keys/reload", None),
        ("GET", "/metrics", None),
    ],
)
def test_admin_rights_gate_model_management_usage_and_metrics(
    client: TestClient, method: str, path: str, body: Any
) -> None:
    response = client.request(method, path, json=body, headers=auth("sk-alice"))
    assert response.status_code == 403
    payload = response.json()
    message = payload["error"] if isinstance(payload["error"], str) else payload["error"]["message"]
    assert "needs a key with admin rights" in message
    if not path.startswith(("/v2", "/api")):
        assert payload["error"]["code"] == "admin_required"


def test_admins_manage_only_the_models_of_their_scope(client: TestClient) -> None:
    unload = {"model_id": "tiny"}
    assert client.post("/v1/models/unload", json=unload, headers=auth("sk-ops")).status_code == 200
    assert client.post("/v1/models/unload", json=unload, headers=auth("root")).status_code == 200
    refused = client.post("/v1/models/unload", json=unload, headers=auth("sk-lead"))
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "model_not_allowed")
    assert client.post("/v2/repository/models/tiny/load", headers=auth("sk-lead")).status_code == 403
    assert client.post("/v2/repository/models/tiny2/unload", headers=auth("sk-lead")).status_code == 200


def limits(response: httpx.Response, kind: str) -> tuple[str, str, str]:
    return tuple(response.headers[f"x-ratelimit-{what}-{kind}"] for what in ("limit", "remaining", "reset"))  # type: ignore[return-value]


def test_requests_per_minute_headers_then_429_in_each_apis_shape(client: TestClient) -> None:
    for left in (2, 1, 0):
        response = client.get("/v1/models", headers=auth("sk-rpm"))
        assert response.status_code == 200
        limit, remaining, reset = limits(response, "requests")
        assert (limit, remaining) == ("3", str(left))
        assert RESET.fullmatch(reset), reset
        assert "x-ratelimit-limit-tokens" not in response.headers  # no token limit on this key
    refused = client.post("/v1/chat/completions", json={"messages": USER}, headers=auth("sk-rpm"))
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("requests", "rate_limit_exceeded", None)
    assert re.fullmatch(
        r"Rate limit reached for 'rpm' on requests per min \(RPM\): Limit 3, Used 3, Requested 1\. "
        r"Please try again in (\d+(\.\d+)?s|1m[\d.]+s)\.",
        error["message"],
    ), error["message"]
    wait_ms = int(refused.headers["retry-after-ms"])
    assert 50_000 <= wait_ms <= 61_000 and int(refused.headers["retry-after"]) == -(-wait_ms // 1000)
    assert limits(refused, "requests")[1] == "0"
    anthropic = client.post("/v1/messages", json=ANTHROPIC_BODY, headers={"x-api-key": "sk-rpm"})
    assert anthropic.status_code == 429 and anthropic.json()["error"]["type"] == "rate_limit_error"
    for path in ("/api/tags", "/v2"):
        other = client.get(path, headers=auth("sk-rpm"))
        assert other.status_code == 429 and other.json()["error"].startswith("Rate limit reached for 'rpm'")
    usage = client.get("/admin/usage", headers=auth("sk-ops")).json()["tenants"]["rpm"]
    assert (usage["last_minute"]["requests"], usage["rate_limited"]) == (3, 4)


def test_token_headers_match_the_counters_then_429(client: TestClient) -> None:
    def used() -> int:
        tenant = client.get("/admin/usage", headers=auth("sk-ops")).json()["tenants"]["tpm"]
        return int(tenant["last_minute"]["total_tokens"])

    first = client.post("/v1/chat/completions", json=LONG, headers=auth("sk-tpm"))
    assert first.status_code == 200
    total = first.json()["usage"]["total_tokens"]
    assert total == used() and limits(first, "tokens")[:2] == ("50", str(50 - total))
    assert RESET.fullmatch(limits(first, "tokens")[2])
    # streamed: the headers leave before the answer, with the prompt counted and no token generated yet
    body = {**LONG, "stream": True, "stream_options": {"include_usage": True}}
    with client.stream("POST", "/v1/chat/completions", json=body, headers=auth("sk-tpm")) as stream:
        remaining = int(limits(stream, "tokens")[1])  # type: ignore[arg-type]
        lines = [line for line in stream.iter_lines() if line.startswith("data: {")]
    usage = json.loads(lines[-1][len("data: ") :])["usage"]
    assert remaining == max(0, 50 - total - usage["prompt_tokens"])
    assert used() == total + usage["total_tokens"] >= 50
    refused = client.post("/v1/chat/completions", json=LONG, headers=auth("sk-tpm"))
    assert refused.status_code == 429 and refused.json()["error"]["type"] == "tokens"
    assert refused.json()["error"]["message"].startswith(
        f"Rate limit reached for 'tpm' on tokens per min (TPM): Limit 50, Used {used()}."
    )


def test_usage_per_key_and_per_tenant_metrics(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="llmserve.access"):
        answer = client.post("/v1/chat/completions", json={**LONG, "model": "tiny"}, headers=auth("sk-alice"))
    assert answer.status_code == 200
    assert any("tenant=alice model=tiny" in r.getMessage() for r in caplog.records)
    own = client.get("/v1/usage", headers=auth("sk-alice")).json()
    assert list(own["tenants"]) == ["alice"] and own["object"] == "usage"
    alice = own["tenants"]["alice"]
    assert alice["limits"] == {
        "requests_per_minute": None,
        "tokens_per_minute": None,
        "max_concurrent": None,
        "in_flight": 1,
    }
    tiny = alice["models"]["tiny"]
    assert set(tiny) == {"last_minute", "last_hour", "since_start"}
    assert tiny["last_minute"] == tiny["since_start"]
    assert tiny["since_start"]["requests"] >= 1 and tiny["since_start"]["completion_tokens"] >= 20
    everyone = client.get("/admin/usage", headers=auth("sk-ops")).json()["tenants"]
    assert {"alice", "ops"} <= set(everyone)
    metrics = client.get("/metrics", headers=auth("root"))
    assert "sk-alice" not in metrics.text and "sk-" not in metrics.text
    families = {f.name: f for f in text_string_to_metric_families(metrics.text)}
    tokens = {
        (s.labels["tenant"], s.labels["model"], s.labels["kind"]): s.value
        for s in families["llmserve_tenant_tokens"].samples
        if s.name.endswith("_total")
    }
    assert tokens[("alice", "tiny", "completion")] == tiny["since_start"]["completion_tokens"]
    assert tokens[("alice", "tiny", "prompt")] == tiny["since_start"]["prompt_tokens"]
    waits = [s for s in families["llmserve_tenant_queue_wait_seconds"].samples if s.name.endswith("_count")]
    assert any(s.labels["tenant"] == "alice" and s.value >= 1 for s in waits)
    requests = {
        s.labels["tenant"]: s.value
        for s in families["llmserve_tenant_requests"].samples
        if s.name.endswith("_total")
    }
    assert requests["alice"] == alice["since_start"]["requests"]  # the /v1/usage request counted itself
    assert {"llmserve_tenant_rate_limited", "llmserve_tenant_forbidden"} <= set(families)


def test_a_stored_response_is_its_tenants_own(client: TestClient) -> None:
    """Another key's response id is a 404 on every route that reads it, as an unknown id is: it can
    neither read, continue, list nor delete it, nor learn that it exists."""
    body = {"model": "tiny", "input": "hi", "max_output_tokens": 4}
    created = client.post("/v1/responses", json=body, headers=auth("sk-alice"))
    assert created.status_code == 200
    rid = created.json()["id"]
    assert client.get(f"/v1/responses/{rid}", headers=auth("sk-alice")).json()["id"] == rid
    for method, path in (("GET", rid), ("GET", f"{rid}/input_items"), ("DELETE", rid)):
        refused = client.request(method, f"/v1/responses/{path}", headers=auth("sk-ops"))
        unknown = client.request(
            method, f"/v1/responses/{path.replace(rid, 'resp_x')}", headers=auth("sk-ops")
        )
        assert refused.status_code == unknown.status_code == 404, (method, path)
        assert refused.json() == json.loads(unknown.text.replace("resp_x", rid))
    onward = client.post("/v1/responses", json={**body, "previous_response_id": rid}, headers=auth("sk-ops"))
    assert (onward.status_code, onward.json()["error"]["param"]) == (404, "previous_response_id")
    assert client.delete(f"/v1/responses/{rid}", headers=auth("sk-alice")).status_code == 200
