"""A client written for Triton works unchanged: NVIDIA's own tritonclient (HTTP) checks health, reads
the repository index, loads, checks readiness and metadata, runs an inference and unloads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
from model_configs import plain
from paths import TESTS
from servers import live_server

from llmserve.server import create_app


def test_tritonclient_against_llmserve(tiny_dir: Path) -> None:
    with live_server(create_app([plain(tiny_dir, "tiny")], "tiny", preload="none")) as base:
        script = TESTS / "triton_client.py"
        run = subprocess.run(
            [sys.executable, str(script), base.removeprefix("http://")],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr
        out = json.loads(run.stdout)
        body = {"text_input": "hello there", "parameters": {"temperature": 0, "max_tokens": 8}}
        expected = httpx.post(f"{base}/v2/models/tiny/generate", json=body, timeout=60).json()["text_output"]
    assert (out["live"], out["ready"], out["model_ready"], out["ready_after_unload"]) == (
        True,
        True,
        True,
        False,
    )
    assert out["server"]["name"] == "llmserve" and "model_repository" in out["server"]["extensions"]
    unloaded = [{"name": "tiny", "version": "1", "state": "UNAVAILABLE", "reason": "unloaded"}]
    assert out["index_before"] == out["index_after"] == unloaded
    assert out["metadata"]["name"] == "tiny" and out["metadata"]["versions"] == ["1"]
    assert out["infer"]["outputs"] == [
        {"name": "text_output", "datatype": "BYTES", "shape": [1], "data": [expected]}
    ]
