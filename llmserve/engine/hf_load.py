"""Loading a transformers model and its tokenizer: from a hub checkpoint or a GGUF file, placed on its
devices, quantized while read, metered. One load at a time (`LOAD_LOCK`)."""

from __future__ import annotations

import threading
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from llmserve.config.entries import GGUFSpec, ModelConfig
from llmserve.engine.attention import use_grouped_sdpa
from llmserve.engine.gguf import load_gguf
from llmserve.engine.memory import metered_load
from llmserve.engine.placement import model_device_map, own_weights, quantization_config, unmapped_reads
from llmserve.engine.progress import report

# transformers sets torch's process-wide default dtype while it builds a model, so two loads at once on two
# workers would build parts of each model in the other's dtype: loads take turns.
LOAD_LOCK = threading.Lock()


def load_pretrained(config: ModelConfig, dtype: torch.dtype | str, device: torch.device) -> tuple[Any, Any]:
    with LOAD_LOCK:
        return _load_unlocked(config, dtype, device)


def placement(
    config: ModelConfig, device: torch.device, source: dict[str, Any], auto_class: Any = AutoModelForCausalLM
) -> dict[str, Any]:
    """from_pretrained's device_map and quantization_config for this model's options."""
    spec = config.spec
    model_id = spec.quantized_model_id if isinstance(spec, GGUFSpec) else spec.model_id
    options: dict[str, Any] = {"device_map": {"": str(device)}} if device.type == "cuda" else {}
    if config.device_layers is not None:
        options["device_map"] = model_device_map(model_id, config.device_layers, auto_class, **source)
    mode = config.quant_mode
    if mode is not None:
        options["quantization_config"] = quantization_config(mode)
        options.setdefault("device_map", {"": str(device)})
    return options


def _load_unlocked(config: ModelConfig, dtype: torch.dtype | str, device: torch.device) -> tuple[Any, Any]:
    """The tokenizer and the model, with the process's growth metered (`memory.metered_load`; the caller
    holds `LOAD_LOCK`). `in_situ_quant` quantizes while loading: transformers builds the model on the meta
    device and fills it one tensor at a time, each quantized as it is read, so the full-precision model is
    never in the process's memory whole (`unmapped_reads`, `own_weights`)."""
    spec = config.spec
    # Any: transformers 5.25 types each keyword of from_pretrained, 5.24 takes **kwargs
    revision: dict[str, Any] = {} if config.revision is None else {"revision": config.revision}
    source = {"gguf_file": spec.quantized_filename} if isinstance(spec, GGUFSpec) else revision
    options = placement(config, device, source)
    quantized = config.quant_mode is not None
    with metered_load(), unmapped_reads(quantized):
        if isinstance(spec, GGUFSpec):
            tokenizer, model = load_gguf(spec, dtype, options, config.cache_dir)
        else:
            report("tokenizer")
            tokenizer = AutoTokenizer.from_pretrained(spec.model_id, **revision)
            report("weights")
            model = AutoModelForCausalLM.from_pretrained(spec.model_id, dtype=dtype, **revision, **options)
        if quantized:
            own_weights(model)
    use_grouped_sdpa(model, device)
    if config.chat_template is not None:
        tokenizer.chat_template = config.chat_template.text
    return tokenizer, model


def eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    ids: set[int] = set()
    configured = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(int(i) for i in configured)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return frozenset(ids)
