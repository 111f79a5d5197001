"""How a transformers model takes and returns its KV cache, across the transformers versions llmserve allows,
and what the cache costs per token.

transformers 5.24 renamed the forward argument and the output field `past_key_values` to `cache` (the old
name still works until 5.40, with a FutureWarning on every call). The engine asks the model class which
name its `forward` has, once per class, and reads the output field of the same generation.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

NEW = "cache"
OLD = "past_key_values"

_names: dict[type, str] = {}


def cache_name(model: Any) -> str:
    """`cache` where the model's forward takes it (transformers >= 5.24), else `past_key_values`."""
    kind = type(model)
    name = _names.get(kind)
    if name is None:
        name = NEW if NEW in inspect.signature(model.forward).parameters else OLD
        _names[kind] = name
    return name


def with_cache(model: Any, cache: Any) -> dict[str, Any]:
    """The keyword argument that hands `cache` to `model`'s forward."""
    return {cache_name(model): cache}


def returned_cache(model: Any, out: Any) -> Any:
    """The cache in `model`'s forward output, under the field name of the model's generation."""
    return getattr(out, cache_name(model))


def kv_bytes_per_token(text_config: Any, dtype: torch.dtype) -> int:
    """Keys and values of one token in every layer: layers x 2 x KV heads x head size x dtype bytes."""
    layers = int(getattr(text_config, "num_hidden_layers", 0) or 0)
    heads = int(getattr(text_config, "num_attention_heads", 0) or 0)
    kv_heads = int(getattr(text_config, "num_key_value_heads", 0) or heads)
    head_dim = getattr(text_config, "head_dim", None) or int(getattr(text_config, "hidden_size", 0)) // max(
        heads, 1
    )
    return 2 * layers * kv_heads * int(head_dim) * dtype.itemsize


def cache_length(cache: Any) -> int:
    """Token slots of a one-sequence cache (rows x length of its first layer)."""
    layers = getattr(cache, "layers", None)
    if not layers or getattr(layers[0], "keys", None) is None:
        return 0
    keys = layers[0].keys
    return int(keys.shape[0] * keys.shape[-2])
