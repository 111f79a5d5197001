"""/openapi.json describes the tenant routes (docs/tenants.md): `GET /v1/usage`, `GET /admin/usage`,
`POST /admin/keys/reload` and every other /admin route, with their response shapes; the real answers of
a server with a keys file match what the document says, refusals included."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import scripted
from jsonschema import Draft202012Validator
from model_configs import config
from starlette.routing import Route
from starlette.testclient import TestClient

from llmserve.config.keys import load_keys
from llmserve.server import ServerOptions, create_app

KEYS = {"alice": {"key": "sk-alice", "models": ["m"]}, "ops": {"key": "sk-ops", "admin": True}}
ALICE, OPS = {"Authorization": "Bearer sk-alice"}, {"Authorization": "Bearer sk-ops"}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    path: Path = tmp_path_factory.mktemp("keys") / "keys.json"
    path.write_text(json.dumps(KEYS))
    options = ServerOptions(keys=load_keys(path))
    app = create_app([config(float("inf"), "m")], "m", factory=scripted(["a", "b"]), options=options)
    with TestClient(app) as test_client:
        yield test_client


def conforms(document: dict[str, Any], path: str, method: str, status: int, body: Any) -> None:
    """`body` is valid against the schema the document gives for that answer."""
    described = document["paths"][path][method]["responses"][str(status)]
    schema = described["content"]["application/json"]["schema"]
    Draft202012Validator({**schema, "components": document["components"]}).validate(body)


def test_the_usage_and_admin_routes_are_described_with_their_answers(client: TestClient) -> None:
    document = client.get("/openapi.json", headers=OPS).json()
    paths = document["paths"]
    routes = [r for r in client.app.routes if isinstance(r, Route)]  # type: ignore[attr-defined]
    tenant_routes = [r for r in routes if r.path.startswith("/admin/") or r.path == "/v1/usage"]
    assert {r.path for r in tenant_routes} >= {"/v1/usage", "/admin/usage", "/admin/keys/reload"}
    for route in tenant_routes:
        for method in route.methods or ():
            if method != "HEAD":
                assert method.lower() in paths.get(route.path, {}), f"{method} {route.path} is not described"
    for path in ("/v1/usage", "/admin/usage"):
        assert paths[path]["get"]["responses"]["200"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/UsageReport"
        }
    assert "403" in paths["/admin/usage"]["get"]["responses"]
    assert {"400", "403"} <= set(paths["/admin/keys/reload"]["post"]["responses"])
    for management in ("/v1/models/unload", "/v1/models/reload", "/v1/models/promote"):
        assert "403" in paths[management]["post"]["responses"]  # admin_required

    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    assert client.post("/v1/chat/completions", json=body, headers=ALICE).status_code == 200
    own = client.get("/v1/usage", headers=ALICE)
    conforms(document, "/v1/usage", "get", 200, own.json())
    assert own.json()["tenants"]["alice"]["models"]["m"]["since_start"]["total_tokens"] > 0
    every = client.get("/admin/usage", headers=OPS)
    conforms(document, "/admin/usage", "get", 200, every.json())
    assert set(every.json()["tenants"]) == {"alice", "ops"}
    refused = client.get("/admin/usage", headers=ALICE)
    conforms(document, "/admin/usage", "get", 403, refused.json())
    assert refused.json()["error"]["code"] == "admin_required"
    reloaded = client.post("/admin/keys/reload", headers=OPS)
    conforms(document, "/admin/keys/reload", "post", 200, reloaded.json())
    assert reloaded.json()["tenants"] == ["alice", "ops"]
