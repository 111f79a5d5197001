"""Footprint estimates from a model's files (safetensors headers, a GGUF tensor table) against what the
loaded model really holds; the GGUF header reader; one GGUF parse per load."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from model_configs import plain

from llmserve.config.entries import GGUFSpec, ModelConfig
from llmserve.engine.footprint import KV_RESERVE_TOKENS, estimate, read_gguf
from llmserve.engine.gguf import one_parse
from llmserve.engine.hf import HFEngine


def test_the_estimate_of_a_checkpoint_matches_the_loaded_weights(tiny_dir: Path) -> None:
    config = plain(tiny_dir, "tiny", dtype="float32")
    found = estimate(config)
    assert found is not None
    engine = HFEngine.load(config)
    try:
        measured = engine.memory_by_device
        assert set(found.weights) == set(measured) == {"cpu"}
        assert abs(found.weights["cpu"] - measured["cpu"]) <= 0.02 * measured["cpu"]
        text = engine.model.config
        per_token = 2 * text.num_hidden_layers * text.num_key_value_heads * text.head_dim * 4
        tokens = min(KV_RESERVE_TOKENS, text.max_position_embeddings)
        assert found.kv_reserve == {"cpu": per_token * tokens}
        assert found.total == {"cpu": found.weights["cpu"] + per_token * tokens}
    finally:
        engine.close()


def test_the_estimate_follows_the_dtype_and_the_quantization(tiny_dir: Path) -> None:
    full = estimate(plain(tiny_dir, "tiny", dtype="float32"))
    half = estimate(plain(tiny_dir, "tiny", dtype="bfloat16"))
    nf4_config = dataclasses.replace(plain(tiny_dir, "tiny", dtype="bfloat16"), in_situ_quant="nf4")
    nf4 = estimate(nf4_config)
    assert full is not None and half is not None and nf4 is not None
    assert half.weights["cpu"] == full.weights["cpu"] // 2
    assert nf4.weights["cpu"] < 0.75 * half.weights["cpu"]
    engine = HFEngine.load(nf4_config)
    try:
        measured = engine.memory_by_device["cpu"]
        assert abs(nf4.weights["cpu"] - measured) <= 0.25 * measured
    finally:
        engine.close()


def test_no_estimate_for_a_hub_model_not_on_this_disk() -> None:
    config = ModelConfig("x", "x", plain(Path("/nonexistent"), "x").spec)
    assert (
        estimate(dataclasses.replace(config, spec=type(config.spec)(model_id="nobody/not-downloaded")))
        is None
    )


def write_gguf(path: Path) -> Path:
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(2)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_embedding_length(32)
    writer.add_context_length(128)
    writer.add_token_list(["<s>", "</s>", "hello", "world"])  # an array of strings, to be skipped
    writer.add_array("tokenizer.ggml.scores", [0.0, 0.5, 1.0, 1.5])  # a fixed-size array
    writer.add_tensor("token_embd.weight", np.zeros((4, 32), dtype=np.float32))
    writer.add_tensor("blk.0.attn_q.weight", np.zeros((32, 32), dtype=np.float16))
    writer.add_tensor("output_norm.weight", np.zeros(32, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_the_gguf_header_reader(tmp_path: Path) -> None:
    tensors, shape = read_gguf(write_gguf(tmp_path / "t.gguf"))
    assert [(t.name, t.elements) for t in tensors] == [
        ("token_embd.weight", 128),
        ("blk.0.attn_q.weight", 1024),
        ("output_norm.weight", 32),
    ]
    assert shape == {
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "hidden_size": 32,
        "max_position_embeddings": 128,
    }
    (tmp_path / "not.gguf").write_bytes(b"GGML" + b"\0" * 20)
    with pytest.raises(ValueError, match="is not a GGUF file"):
        read_gguf(tmp_path / "not.gguf")


def test_a_gguf_estimate(tmp_path: Path) -> None:
    directory = tmp_path / "repo"
    directory.mkdir()
    write_gguf(directory / "t.gguf")
    spec = GGUFSpec(
        tok_model_id=str(directory), quantized_model_id=str(directory), quantized_filename="t.gguf"
    )
    found = estimate(ModelConfig("t", "t", spec, dtype="float32"))
    assert found is not None
    assert found.weights == {"cpu": (128 + 1024 + 32) * 4}
    assert found.kv_reserve == {"cpu": 2 * 2 * 2 * (32 // 4) * 4 * 128}


def test_one_parse_shares_one_reader_for_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_gguf(tmp_path / "t.gguf")
    other = write_gguf(tmp_path / "u.gguf")
    made: list[Any] = []
    real = gguf.GGUFReader

    def counting(file: Any, *args: Any, **kwargs: Any) -> Any:
        made.append(file)
        return real(file, *args, **kwargs)

    monkeypatch.setattr(gguf, "GGUFReader", counting)
    with one_parse(path):
        first = gguf.GGUFReader(str(path))
        assert gguf.GGUFReader(path) is first  # transformers' next two parses get the same reader
        gguf.GGUFReader(str(other))  # another file is read as usual
    assert gguf.GGUFReader is counting  # restored
    assert made == [str(path), str(other)]
