"""Servers for the tests: an app under uvicorn in a thread, and the real `llmserve` command."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import uvicorn
from starlette.applications import Starlette


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
