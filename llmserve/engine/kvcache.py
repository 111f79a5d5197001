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
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

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
    """Token slots of a one-sequence cache (rows x length of its first layer, or its reserved room)."""
    layers = getattr(cache, "layers", None)
    if layers and isinstance(layers[0], ReservedLayer) and layers[0].room_slots is not None:
        return layers[0].room_slots
    if not layers or getattr(layers[0], "keys", None) is None:
        return 0
    keys = layers[0].keys
    return int(keys.shape[0] * keys.shape[-2])


class ReservedLayer(DynamicLayer):  # type: ignore[no-untyped-call]
    """A `DynamicLayer` with room for `capacity` tokens allocated at its first update: each update writes the
    new keys and values in place and returns views of the filled part, where `DynamicLayer` copies the whole
    layer into a new tensor every time (a prompt read in 16-token chunks would copy its cache ~450 times by
    7,000 tokens; measured, that copy was ~5% of a chunk's pass at 3,000 tokens). Once its tensors are
    replaced from outside (a batch joined them) or the room runs out, it grows by copying, as
    `DynamicLayer` does."""

    def __init__(self, capacity: int) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.capacity = capacity
        self._room: tuple[torch.Tensor, torch.Tensor] | None = None

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        length = self.get_seq_length()
        end = length + key_states.shape[-2]
        room = self._room
        if room is None and length == 0 and end <= self.capacity:
            self.lazy_initialization(key_states, value_states)
            shape = (*key_states.shape[:-2], self.capacity, key_states.shape[-1])
            room = (
                key_states.new_empty(shape),
                value_states.new_empty((*shape[:-1], value_states.shape[-1])),
            )
        elif (
            room is None
            or end > self.capacity
            or self.keys is None
            or self.keys.data_ptr() != room[0].data_ptr()
        ):
            self._room = None
            return super().update(key_states, value_states, *args, **kwargs)
        room[0][..., length:end, :] = key_states
        room[1][..., length:end, :] = value_states
        self._room = room
        self.keys, self.values = room[0][..., :end, :], room[1][..., :end, :]
        return self.keys, self.values

    def drop_room(self) -> None:
        """Forgets the reserved room (its tensors were copied elsewhere)."""
        self._room = None

    @property
    def room_slots(self) -> int | None:
        """Token slots of the reserved room (rows x capacity), None when it has none."""
        return None if self._room is None else int(self._room[0].shape[0] * self._room[0].shape[-2])


def reserved_cache(model_config: Any, capacity: int) -> DynamicCache:
    """A cache of plain layers for one sequence of `capacity` tokens, written in place (`ReservedLayer`)."""
    cache = DynamicCache(config=model_config)
    cache.layers = [ReservedLayer(capacity) for _ in cache.layers]
    return cache
