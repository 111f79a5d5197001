"""Engines. `load_engine` is the default `EngineFactory`; torch is imported only when it is called.

Importing the package routes the dependencies' warnings to the debug log, and each load sets their
loggers' levels (`quiet.py`): nothing of theirs reaches the terminal at the default log level."""

from __future__ import annotations

from llmserve.config.entries import ModelConfig
from llmserve.engine import quiet
from llmserve.engine.base import Engine

quiet.install()


def load_engine(config: ModelConfig) -> Engine:
    """Load `config` with the transformers/torch engine (on the calling thread)."""
    quiet.quiet_libraries()
    if config.kind == "Embedding":
        from llmserve.engine.embedding import EmbeddingEngine

        return EmbeddingEngine.load(config)
    if config.kind == "VisionPlain":
        from llmserve.engine.vision import VisionEngine

        return VisionEngine.load(config)
    if config.engine == "llama.cpp":
        from llmserve.engine.llamacpp import LlamaCppEngine

        return LlamaCppEngine.load(config)
    from llmserve.engine.hf import HFEngine

    return HFEngine.load(config)
