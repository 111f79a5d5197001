"""Which engine runs an entry: `engine` on GGUF entries (auto, llama.cpp, transformers), `--engine` for
the entries that do not say, and one-line errors for choices that cannot be."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llmserve.config import engines
from llmserve.config.entries import ModelDefaults, load_config
from llmserve.errors import ConfigError


def gguf_entry(tmp_path: Path, **options: Any) -> dict[str, Any]:
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    spec = {
        "tok_model_id": str(tmp_path),
        "quantized_model_id": str(tmp_path),
        "quantized_filename": "m.gguf",
    }
    return {"GGUF": spec, "alias": "g", **options}


def engine_of(tmp_path: Path, entry: dict[str, Any], defaults: ModelDefaults | None = None) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"m": entry}))
    return load_config(path, defaults or ModelDefaults())[0].engine


def error_of(tmp_path: Path, entry: dict[str, Any]) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"m": entry}))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "\n" not in str(info.value)
    return str(info.value).removeprefix(f"{path}: ")


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engines, "llama_cpp_installed", lambda: True)


@pytest.fixture
def absent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engines, "llama_cpp_installed", lambda: False)


@pytest.mark.usefixtures("installed")
def test_auto_is_llama_cpp_when_installed(tmp_path: Path) -> None:
    assert engine_of(tmp_path, gguf_entry(tmp_path)) == "llama.cpp"
    assert engine_of(tmp_path, gguf_entry(tmp_path, engine="transformers")) == "transformers"
    assert engine_of(tmp_path, {"Plain": {"model_id": str(tmp_path)}}) == "transformers"


@pytest.mark.usefixtures("absent")
def test_auto_is_transformers_without_llama_cpp(tmp_path: Path) -> None:
    assert engine_of(tmp_path, gguf_entry(tmp_path)) == "transformers"
    assert error_of(tmp_path, gguf_entry(tmp_path, engine="llama.cpp")) == (
        "$.m.engine: llama-cpp-python is not installed (pip install 'llmserve[llamacpp]')"
    )


@pytest.mark.usefixtures("installed")
def test_auto_keeps_transformers_for_what_only_it_honours(tmp_path: Path) -> None:
    assert engine_of(tmp_path, gguf_entry(tmp_path, dtype="float32")) == "transformers"
    assert engine_of(tmp_path, gguf_entry(tmp_path, max_batch_size=300)) == "transformers"
    assert error_of(tmp_path, gguf_entry(tmp_path, engine="llama.cpp", dtype="float32")) == (
        '$.m.engine: llama.cpp cannot honour "dtype": "float32" (llama.cpp computes in the file\'s own types)'
    )
    assert error_of(tmp_path, gguf_entry(tmp_path, engine="llama.cpp", unload_mode="offload")).startswith(
        '$.m.engine: llama.cpp cannot honour "unload_mode": "offload"'
    )


@pytest.mark.usefixtures("installed")
def test_the_command_lines_engine_applies_to_gguf_entries_that_do_not_say(tmp_path: Path) -> None:
    defaults = ModelDefaults(engine="transformers")
    assert engine_of(tmp_path, gguf_entry(tmp_path), defaults) == "transformers"
    assert engine_of(tmp_path, gguf_entry(tmp_path, engine="llama.cpp"), defaults) == "llama.cpp"
    plain = {"Plain": {"model_id": str(tmp_path)}}
    assert engine_of(tmp_path, plain, ModelDefaults(engine="llama.cpp")) == "transformers"


def test_llama_cpp_on_other_entries_and_threads_are_refused(tmp_path: Path) -> None:
    plain = {"Plain": {"model_id": str(tmp_path)}}
    assert error_of(tmp_path, {**plain, "engine": "llama.cpp"}) == (
        "$.m.engine: llama.cpp runs GGUF files; a Plain entry runs on transformers"
    )
    assert error_of(tmp_path, {**plain, "threads": 2}) == (
        "$.m: threads applies to the llama.cpp engine, which runs GGUF entries"
    )
    assert "$.m.engine: Input should be 'auto', 'llama.cpp' or 'transformers'" in error_of(
        tmp_path, gguf_entry(tmp_path, engine="vllm")
    )
