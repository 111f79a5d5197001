"""Embedding models (`Embedding` spec): a transformers encoder laid out as sentence-transformers saves it.

`modules.json` lists the pipeline: the transformer, a pooling module (its `config.json` says mean, CLS,
max or mean-sqrt-len pooling) and, when present, `Normalize` (unit length). `sentence_bert_config.json`
gives the longest input (`max_seq_length`); a longer input is a 400, never silently cut.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModel, AutoTokenizer

from llmserve.config.entries import ModelConfig
from llmserve.engine.base import ChatMessage, GenerationParams
from llmserve.engine.devices import DTYPES, bytes_by_device, free_memory, resolve_device
from llmserve.engine.hf import LOAD_LOCK
from llmserve.engine.progress import report
from llmserve.errors import InvalidRequest

log = logging.getLogger(__name__)
EMBED_BATCH_TOKENS = 8192  # padded tokens per forward pass
_POOLING = ("cls_token", "max_tokens", "mean_sqrt_len_tokens", "mean_tokens")


def read_layout(directory: Path) -> tuple[str, bool, int | None]:
    """(pooling mode, normalize, max_seq_length) from a sentence-transformers directory; mean pooling,
    no normalization and the model's own limit when the files are absent."""
    try:
        modules = json.loads((directory / "modules.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        modules = []
    pooling, normalize = "mean_tokens", False
    for module in modules:
        kind = str(module.get("type", ""))
        if kind.endswith(".Pooling"):
            config = json.loads((directory / module["path"] / "config.json").read_text(encoding="utf-8"))
            chosen = [mode for mode in _POOLING if config.get(f"pooling_mode_{mode}")]
            if len(chosen) != 1:
                raise ValueError(
                    f"pooling modes {chosen or 'none'} in {module['path']}: llmserve takes exactly one"
                )
            pooling = chosen[0]
        elif kind.endswith(".Normalize"):
            normalize = True
    try:
        limit = json.loads((directory / "sentence_bert_config.json").read_text(encoding="utf-8"))[
            "max_seq_length"
        ]
    except (OSError, ValueError, KeyError):
        limit = None
    return pooling, normalize, None if limit is None else int(limit)


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """[batch, tokens, dim] hidden states → [batch, dim], padding excluded."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "cls_token":
        return hidden[:, 0]
    if mode == "max_tokens":
        return hidden.masked_fill(weights == 0, float("-inf")).max(dim=1).values
    summed = (hidden * weights).sum(dim=1)
    counts = weights.sum(dim=1).clamp(min=1e-9)
    return summed / (counts.sqrt() if mode == "mean_sqrt_len_tokens" else counts)


def token_batches(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Input indices in forward passes of at most `max_tokens` padded tokens each (rows x the longest;
    one input alone may be longer), similar lengths together, so that a request of many long inputs
    needs no more activation memory than one pass of `max_tokens`."""
    batches: list[list[int]] = []
    for index in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        if batches and (len(batches[-1]) + 1) * lengths[index] <= max_tokens:
            batches[-1].append(index)
        else:
            batches.append([index])
    return batches


class EmbeddingEngine:
    """An encoder and its tokenizer. Chat requests are refused; `embed` runs on the worker thread."""

    def __init__(
        self, model: Any, tokenizer: Any, device: torch.device, layout: tuple[str, bool, int | None]
    ) -> None:
        self._model: Any = model
        self._tokenizer: Any = tokenizer
        self._device = device
        self._pooling, self._normalize, limit = layout
        own = int(getattr(model.config, "max_position_embeddings", 512) or 512)
        self._limit = min(limit or own, own)

    @classmethod
    def load(cls, config: ModelConfig) -> EmbeddingEngine:
        directory = Path(getattr(config.spec, "model_id", ""))
        device = resolve_device(config.device)
        dtype = torch.float32 if config.dtype == "auto" else DTYPES[config.dtype]  # exact vectors by default
        revision: dict[str, Any] = {} if config.revision is None else {"revision": config.revision}
        with LOAD_LOCK:
            report("tokenizer")
            tokenizer = AutoTokenizer.from_pretrained(str(directory), **revision)
            report("weights")
            model = AutoModel.from_pretrained(str(directory), dtype=dtype, **revision).to(device).eval()
        layout = read_layout(directory) if directory.is_dir() else ("mean_tokens", False, None)
        log.info("loaded embedding model %s (%s pooling, normalize=%s)", config.api_id, layout[0], layout[1])
        return cls(model, tokenizer, device, layout)

    @property
    def dimensions(self) -> int:
        return int(self._model.config.hidden_size)

    @property
    def context_length(self) -> int:
        return self._limit

    @property
    def memory_bytes(self) -> int:
        return int(self._model.get_memory_footprint())

    @property
    def memory_by_device(self) -> dict[str, int]:
        return bytes_by_device(self._model)

    def tokenize(self, text: str) -> list[int]:
        return list(self._tokenizer(text)["input_ids"])  # with the model's special tokens ([CLS] ... [SEP])

    def embed(self, inputs: Sequence[Sequence[int]]) -> list[list[float]]:
        for i, ids in enumerate(inputs):
            if len(ids) > self._limit:
                raise InvalidRequest(
                    f"input {i} is {len(ids)} tokens; this model takes at most {self._limit}", param="input"
                )
            if not ids:
                raise InvalidRequest(f"input {i} is empty", param="input")
        vocab = int(self._model.config.vocab_size)
        if any(not 0 <= t < vocab for ids in inputs for t in ids):
            raise InvalidRequest(f"token ids must be between 0 and {vocab - 1} for this model", param="input")
        out: list[list[float]] = [[] for _ in inputs]
        for group in token_batches([len(ids) for ids in inputs], EMBED_BATCH_TOKENS):
            for index, vector in zip(group, self._embed_batch([inputs[i] for i in group]), strict=True):
                out[index] = vector
        return out

    def _embed_batch(self, inputs: Sequence[Sequence[int]]) -> list[list[float]]:
        width = max(len(ids) for ids in inputs)
        pad = int(self._tokenizer.pad_token_id or 0)
        batch = torch.tensor([list(i) + [pad] * (width - len(i)) for i in inputs], device=self._device)
        mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i in inputs], device=self._device)
        with torch.inference_mode():
            hidden = self._model(input_ids=batch, attention_mask=mask).last_hidden_state
            vectors = pool(hidden.float(), mask, self._pooling)
            if self._normalize:
                vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
        return [[float(x) for x in row] for row in vectors.cpu()]

    # -- a chat worker's protocol: an embedding model does not generate --
    def is_eos(self, token_id: int) -> bool:
        return False

    def encode_chat(
        self, messages: Sequence[ChatMessage], tools: Sequence[dict[str, Any]] | None = None
    ) -> list[int]:
        raise InvalidRequest(
            "this is an embedding model: it does not chat; use POST /v1/embeddings", param="model"
        )

    def decode(self, token_ids: Sequence[int]) -> str:
        return str(self._tokenizer.decode(list(token_ids), skip_special_tokens=True))

    def start(self, prompt_ids: Sequence[int], params: GenerationParams) -> int:
        raise InvalidRequest("this is an embedding model: it does not generate text", param="model")

    def step(self, seq_ids: Sequence[int]) -> list[int | None]:
        raise RuntimeError("an embedding model has no sequences to step")

    def release(self, seq_id: int) -> None:
        return None

    def offload(self) -> bool:
        return False

    def wake(self) -> None:
        return None

    def close(self) -> None:
        self._model = None
        self._tokenizer = None
        free_memory(self._device)
