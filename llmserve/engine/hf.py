"""The transformers/torch engine: the only module that imports torch or transformers.

Each sequence keeps its own KV cache and random generator; `step` runs one forward pass per sequence
(the prompt as a whole on its first step, then one token), so every sequence keeps its own sampling
parameters and seed.
"""

from __future__ import annotations

import gc
import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jinja2
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from llmserve.config import Dtype, GGUFSpec, ModelConfig, ModelSpec
from llmserve.engine.base import ChatMessage, GenerationParams
from llmserve.errors import InvalidRequest

log = logging.getLogger(__name__)

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def resolve_device(device: str) -> torch.device:
    """`auto` is CUDA when there is one, else the CPU; an absent CUDA device is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device '{device}' asked for, but this machine has no CUDA device")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise RuntimeError(
                f"device '{device}' asked for, but only {torch.cuda.device_count()} CUDA devices"
            )
    return resolved


def resolve_dtype(dtype: Dtype, device: torch.device) -> torch.dtype | str:
    """`auto`: the checkpoint's own dtype on CUDA; float32 on the CPU, where half types may be emulated."""
    if dtype != "auto":
        return _DTYPES[dtype]
    return "auto" if device.type == "cuda" else torch.float32


def _load_pretrained(spec: ModelSpec, dtype: torch.dtype | str, device: torch.device) -> tuple[Any, Any]:
    placement: dict[str, Any] = {"device_map": {"": str(device)}} if device.type == "cuda" else {}
    if isinstance(spec, GGUFSpec):
        if spec.tok_model_id == spec.quantized_model_id:
            tokenizer = AutoTokenizer.from_pretrained(spec.tok_model_id, gguf_file=spec.quantized_filename)
        else:
            tokenizer = AutoTokenizer.from_pretrained(spec.tok_model_id)
        model = AutoModelForCausalLM.from_pretrained(
            spec.quantized_model_id, gguf_file=spec.quantized_filename, dtype=dtype, **placement
        )
    else:
        tokenizer = AutoTokenizer.from_pretrained(spec.model_id)
        model = AutoModelForCausalLM.from_pretrained(spec.model_id, dtype=dtype, **placement)
    return tokenizer, model


def _eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    ids: set[int] = set()
    configured = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(int(i) for i in configured)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return frozenset(ids)


@dataclass
class _Sequence:
    params: GenerationParams
    next_input: torch.Tensor
    generator: torch.Generator | None
    cache: Any = None


GREEDY_BELOW = 1e-5  # a smaller temperature overflows the logits: it is greedy in effect


def sample(logits: torch.Tensor, params: GenerationParams, generator: torch.Generator | None) -> int:
    """One token from a 1-D logits vector: greedy at temperature 0, else temperature, top-k, top-p."""
    if params.temperature < GREEDY_BELOW:
        return int(torch.argmax(logits).item())
    scaled = logits.float() / params.temperature
    if 0 < params.top_k < scaled.shape[-1]:
        kth = torch.topk(scaled, params.top_k).values[-1]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    probs = torch.softmax(scaled, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        cumulative = torch.cumsum(sorted_probs, dim=-1)
        drop = cumulative - sorted_probs >= params.top_p
        drop[0] = False  # the most likely token always stays (a tiny top_p rounds to 0 in float32)
        sorted_probs[drop] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator).item())


class HFEngine:
    """A causal LM and its tokenizer on one device."""

    def __init__(self, model: Any, tokenizer: Any, device: torch.device) -> None:
        self._model: Any = model
        self._tokenizer: Any = tokenizer
        self._device = device
        self._eos = _eos_ids(model, tokenizer)
        self._context = int(getattr(model.config, "max_position_embeddings", 0) or 2048)
        self._seqs: dict[int, _Sequence] = {}
        self._ids = itertools.count()

    @classmethod
    def load(cls, config: ModelConfig) -> HFEngine:
        device = resolve_device(config.device)
        dtype = resolve_dtype(config.dtype, device)
        tokenizer, model = _load_pretrained(config.spec, dtype, device)
        model.eval()
        log.info("loaded %s on %s (%s)", config.api_id, device, model.dtype)
        return cls(model, tokenizer, device)

    @property
    def context_length(self) -> int:
        return self._context

    @property
    def model(self) -> Any:
        return self._model

    def is_eos(self, token_id: int) -> bool:
        return token_id in self._eos

    def encode_chat(self, messages: Sequence[ChatMessage]) -> list[int]:
        if not self._tokenizer.chat_template:
            raise InvalidRequest("this model has no chat template, so it cannot serve chat completions")
        rendered = [{"role": m.role, "content": m.content} for m in messages]
        try:
            text = self._tokenizer.apply_chat_template(rendered, add_generation_prompt=True, tokenize=False)
        except jinja2.TemplateError as exc:
            msg = f"the model's chat template rejected the messages: {exc}"
            raise InvalidRequest(msg, param="messages") from None
        return list(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, token_ids: Sequence[int]) -> str:
        return str(self._tokenizer.decode(list(token_ids), skip_special_tokens=True))

    def start(self, prompt_ids: Sequence[int], params: GenerationParams) -> int:
        generator = None
        if params.temperature >= GREEDY_BELOW:
            generator = torch.Generator(device=self._device)
            if params.seed is None:
                generator.seed()
            else:
                generator.manual_seed(params.seed)
        prompt = torch.tensor([list(prompt_ids)], dtype=torch.long, device=self._device)
        seq_id = next(self._ids)
        self._seqs[seq_id] = _Sequence(params, prompt, generator)
        return seq_id

    def step(self, seq_ids: Sequence[int]) -> list[int]:
        tokens: list[int] = []
        with torch.inference_mode():
            for seq_id in seq_ids:
                seq = self._seqs[seq_id]
                out = self._model(input_ids=seq.next_input, past_key_values=seq.cache, use_cache=True)
                seq.cache = out.past_key_values
                token = sample(out.logits[0, -1, :], seq.params, seq.generator)
                seq.next_input = torch.tensor([[token]], dtype=torch.long, device=self._device)
                tokens.append(token)
        return tokens

    def release(self, seq_id: int) -> None:
        self._seqs.pop(seq_id, None)

    def close(self) -> None:
        self._seqs.clear()
        self._model = None
        self._tokenizer = None
        gc.collect()
        if self._device.type == "cuda":
            torch.cuda.empty_cache()
