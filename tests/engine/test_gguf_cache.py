"""The converted-GGUF cache: digests computed once per file version, atomic entries, failures that cost
only speed (fast tier, on the tiny model); the real conversion of SmolLM2 is in the slow tier."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from llmserve.engine.gguf import MARKER, cache_root, converted_dir, file_digest, has_tokenizer, save_converted


def test_cache_root_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LLMSERVE_CACHE_DIR", str(tmp_path / "env"))
    assert cache_root(str(tmp_path / "cli")) == tmp_path / "cli"
    assert cache_root(None) == tmp_path / "env"
    monkeypatch.delenv("LLMSERVE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root(None) == tmp_path / "xdg" / "llmserve"


def test_digest_is_the_sha256_computed_once_per_file_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"weights" * 1000)
    root = tmp_path / "cache"
    assert file_digest(model, root) == hashlib.sha256(model.read_bytes()).hexdigest()
    index = json.loads((root / "digests.json").read_text())
    assert index[str(model)]["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    opened: list[Path] = []
    real_open = Path.open

    def counting_open(self: Path, *args: object, **kwargs: object) -> object:
        if self == model:
            opened.append(self)
        return real_open(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "open", counting_open)
    file_digest(model, root)
    assert opened == []  # remembered: not read again
    model.write_bytes(b"other weights")
    os.utime(model, ns=(1, 1))
    opened.clear()
    assert file_digest(model, root) == hashlib.sha256(b"other weights").hexdigest()
    assert opened == [model]
    assert (
        converted_dir(root, model, "bfloat16").name
        == hashlib.sha256(b"other weights").hexdigest()[:32] + "-bfloat16"
    )


def test_a_saved_entry_loads_and_answers_the_same(tiny_dir: Path, tmp_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    target = tmp_path / "gguf" / "abc-float32"
    save_converted(model, tokenizer, target, tmp_path / "m.gguf")
    assert (target / MARKER).is_file() and has_tokenizer(target)
    assert [p.name for p in target.parent.iterdir()] == ["abc-float32"]  # no temporary left
    again = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.inference_mode():
        assert torch.equal(model(ids).logits, again(ids).logits)
    assert AutoTokenizer.from_pretrained(target)("Paris").input_ids == tokenizer("Paris").input_ids


def test_a_cache_that_cannot_be_written_only_logs(
    tiny_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    blocker = tmp_path / "gguf"
    blocker.write_text("a file where the cache directory should be")
    with caplog.at_level(logging.WARNING, logger="llmserve.engine.gguf"):
        save_converted(model, None, blocker / "abc-float32", tmp_path / "m.gguf")
    assert "could not save the converted GGUF model to" in caplog.text
    assert blocker.read_text() == "a file where the cache directory should be"
