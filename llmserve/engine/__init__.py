"""Engines. `load_engine` is the default `EngineFactory`; torch is imported only when it is called."""

from __future__ import annotations

from llmserve.config import ModelConfig
from llmserve.engine.base import Engine


def load_engine(config: ModelConfig) -> Engine:
    """Load `config` with the transformers/torch engine (on the calling thread)."""
    if config.kind == "Embedding":
        from llmserve.engine.embedding import EmbeddingEngine

        return EmbeddingEngine.load(config)
    if config.kind == "VisionPlain":
        from llmserve.engine.vision import VisionEngine

        return VisionEngine.load(config)
    from llmserve.engine.hf import HFEngine

    return HFEngine.load(config)
