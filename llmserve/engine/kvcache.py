"""How a transformers model takes and returns its KV cache, across the transformers versions llmserve allows.

transformers 5.24 renamed the forward argument and the output field `past_key_values` to `cache` (the old
name still works until 5.40, with a FutureWarning on every call). The engine asks the model class which
name its `forward` has, once per class, and reads the output field of the same generation.
"""

from __future__ import annotations

import inspect
from typing import Any

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
