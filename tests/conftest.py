from __future__ import annotations

import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
# converted GGUF copies go to a fresh directory per test session, never the user's cache
os.environ["LLMSERVE_CACHE_DIR"] = tempfile.mkdtemp(prefix="llmserve-cache-")

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import uvicorn
from starlette.applications import Starlette

from llmserve.config.entries import Dtype, ModelConfig, PlainSpec

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny import build_model

    return build_model(tmp_path_factory.mktemp("models") / "tiny-chat")


@pytest.fixture(scope="session")
def tiny_dir2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny import build_model

    return build_model(tmp_path_factory.mktemp("models") / "tiny-chat-2", seed=1)


def plain(directory: Path, alias: str | None = None, dtype: Dtype = "auto") -> ModelConfig:
    return ModelConfig(
        label=alias or directory.name,
        api_id=alias or str(directory),
        spec=PlainSpec(model_id=str(directory)),
        dtype=dtype,
    )


_SCHEMAS = json.loads((DATA / "openai_schemas.json").read_text())


def assert_schema(name: str, instance: Any) -> None:
    """Validates `instance` against OpenAI's schema `name` (from openapi.yaml)."""
    schema = {"$ref": f"#/components/schemas/{name}", "components": _SCHEMAS["components"]}
    jsonschema.validate(instance, schema)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def live_server(app: Starlette) -> Iterator[str]:
    """Runs `app` with uvicorn on a loopback port in a thread; yields the base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def sse_data(body: str) -> list[str]:
    """The `data:` payloads of an SSE body, in order; fails on anything but data events and pings."""
    payloads = []
    for block in body.split("\n\n"):
        if not block.strip() or block.startswith(":"):
            continue
        assert block.startswith("data: "), block
        payloads.append(block[len("data: ") :])
    return payloads


def write_config(directory: Path, models: dict[str, Path], **options: Any) -> Path:
    """A multi-model config serving each directory under its alias, with the same `options` for each."""
    path = directory / "models.json"
    entries = {
        alias: {"Plain": {"model_id": str(d)}, "alias": alias, **options} for alias, d in models.items()
    }
    path.write_text(json.dumps(entries))
    return path


@contextmanager
def llmserve_process(*args: str, capture: bool = False) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """The real `llmserve` command on a free loopback port; yields (base URL, process) once it answers."""
    port = free_port()
    pipe = subprocess.PIPE if capture else None
    process = subprocess.Popen(
        [sys.executable, "-m", "llmserve", "--log-level", "warning", "--port", str(port), *args],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        stdout=pipe,
        stderr=pipe,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"llmserve did not start: {process.communicate(timeout=30)}")
            time.sleep(0.1)
        yield base, process
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)
