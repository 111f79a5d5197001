"""The slow tier for the converted-GGUF cache, on the real SmolLM2 GGUF file: the first load converts and
saves, a reload and a new server read the copy, and the answers do not change."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import gguf
import pytest
from model_configs import require_smollm2
from smollm2_gguf import default_config_on_transformers
from starlette.testclient import TestClient

from llmserve.config.entries import GGUFSpec
from llmserve.engine.gguf import converted_dir, has_tokenizer, is_complete
from llmserve.server import create_app

pytestmark = pytest.mark.slow
BODY = {
    "messages": [{"role": "user", "content": "What is the capital of France?"}],
    "temperature": 0,
    "max_tokens": 20,
}


def test_reload_and_a_new_server_read_the_converted_copy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_smollm2()
    models = [dataclasses.replace(m, cache_dir=str(tmp_path)) for m in default_config_on_transformers()]
    spec = models[0].spec
    assert isinstance(spec, GGUFSpec)
    caplog.set_level(logging.INFO, logger="llmserve.engine.gguf")
    parses: list[Any] = []
    real_reader = gguf.GGUFReader

    def counting_reader(file: Any, *args: Any, **kwargs: Any) -> Any:
        parses.append(file)
        return real_reader(file, *args, **kwargs)

    monkeypatch.setattr(gguf, "GGUFReader", counting_reader)
    with TestClient(create_app(models, models[0].api_id, preload="none")) as client:
        first = client.post("/v1/chat/completions", json=BODY).json()["choices"][0]["message"]["content"]
        assert "Paris" in first
        assert len(parses) == 1  # tokenizer, config and weights share one parse of the file
        assert "from its converted copy" not in caplog.text
        entries = list((tmp_path / "gguf").iterdir())
        assert len(entries) == 1 and is_complete(entries[0]) and has_tokenizer(entries[0])
        gguf_file = Path(spec.quantized_model_id) / spec.quantized_filename
        assert entries[0].name.startswith(converted_dir(tmp_path, gguf_file, "x").name[:32])
        assert client.post("/v1/models/unload", json={"model_id": "default"}).status_code == 200
        assert client.post("/v1/models/reload", json={"model_id": "default"}).status_code == 200
        assert f"loaded {spec.quantized_filename} from its converted copy {entries[0]}" in caplog.text
        again = client.post("/v1/chat/completions", json=BODY).json()["choices"][0]["message"]["content"]
        assert again == first
    caplog.clear()
    with TestClient(create_app(models, models[0].api_id, preload="none")) as client:
        fresh = client.post("/v1/chat/completions", json=BODY).json()["choices"][0]["message"]["content"]
    assert "from its converted copy" in caplog.text
    assert fresh == first
