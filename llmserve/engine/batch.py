"""The running batch of one model: every decoding sequence's KV cache in one left-padded tensor per layer.

Continuous batching without a custom attention kernel: each decode step is one forward pass of shape
`[rows, 1]` over a `DynamicCache` whose layers hold `[rows, heads, length, head_dim]`, with an attention
mask that hides each row's left padding and explicit position ids, so every row computes what it would
compute alone. New sequences are prefilled together in groups of similar length (left-padded the same
way), then joined to the batch in one copy; finished rows are dropped in one copy at the next step, and
columns that have become padding in every row are cut off, so the cache grows and shrinks with the work.

Only models whose every cache layer is a plain `DynamicLayer` can be joined this way (sliding-window and
recurrent layers cannot be left-padded); `joinable` tells, and the engine steps the others one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from llmserve.engine.kvcache import ReservedLayer, returned_cache, with_cache
from llmserve.engine.mixed import Plan


def joinable(cache: Any) -> bool:
    """True when `cache` is a `DynamicCache` of plain dynamic layers (left padding is then exact)."""
    if not isinstance(cache, DynamicCache) or not cache.layers:
        return False
    return all(type(layer) is DynamicLayer for layer in cache.layers)


def _left_pad(tensor: torch.Tensor, length: int) -> torch.Tensor:
    missing = length - tensor.shape[-2]
    if missing == 0:
        return tensor
    shape = (*tensor.shape[:-2], missing, tensor.shape[-1])
    return torch.cat([tensor.new_zeros(shape), tensor], dim=-2)


class Batch:
    """Rows of decoding sequences. Row order is `seq_ids`; `lengths` counts each row's real tokens."""

    def __init__(self, device: torch.device) -> None:
        self._device = device
        self.seq_ids: list[int] = []
        self.lengths: list[int] = []
        self._cache: Any = None  # a joinable DynamicCache (its layers typed loosely by transformers)
        self._mask = torch.zeros((0, 0), dtype=torch.long, device=device)

    def __len__(self) -> int:
        return len(self.seq_ids)

    @property
    def tokens_held(self) -> int:
        """Token slots in the cache: rows x columns, padding included."""
        return len(self) * self.width

    @property
    def width(self) -> int:
        """Columns in the cache (the longest row plus the padding of the others)."""
        return int(self._mask.shape[1])

    def join(self, seq_ids: Sequence[int], cache: Any, mask: torch.Tensor) -> None:
        """Adds prefilled sequences in one copy of the batch: `cache` holds their rows, left-padded as
        `mask` (`[len(seq_ids), columns]`, 1 for a real token) says."""
        width = max(self.width, int(mask.shape[1]))
        parts = [self._cache, cache] if self._cache is not None else [cache]
        for index, layer in enumerate(cache.layers):
            keys = torch.cat([_left_pad(p.layers[index].keys, width) for p in parts], dim=0)
            values = torch.cat([_left_pad(p.layers[index].values, width) for p in parts], dim=0)
            for part in parts:  # layer by layer, so that the copy never holds two whole batches
                part.layers[index].keys = part.layers[index].values = None
            layer.keys, layer.values = keys, values
            if isinstance(layer, ReservedLayer):
                layer.drop_room()
        masks = [m.new_zeros((m.shape[0], width - m.shape[1])) for m in (self._mask, mask)]
        self._mask = torch.cat(
            [torch.cat([masks[0], self._mask], dim=1), torch.cat([masks[1], mask.long()], dim=1)], dim=0
        )
        self._cache = cache
        self.seq_ids.extend(seq_ids)
        self.lengths.extend(int(n) for n in mask.sum(dim=1).tolist())

    def keep(self, seq_ids: set[int]) -> None:
        """Drops every row not in `seq_ids` and the columns that are padding in all remaining rows."""
        rows = [i for i, seq_id in enumerate(self.seq_ids) if seq_id in seq_ids]
        if len(rows) == len(self.seq_ids):
            return
        if not rows:
            self.seq_ids, self.lengths, self._cache = [], [], None
            self._mask = self._mask.new_zeros((0, 0))
            return
        start = self.width - max(self.lengths[i] for i in rows)
        index = torch.tensor(rows, dtype=torch.long, device=self._device)
        assert self._cache is not None
        for layer in self._cache.layers:
            layer.keys = layer.keys.index_select(0, index)[:, :, start:, :]
            layer.values = layer.values.index_select(0, index)[:, :, start:, :]
        self._mask = self._mask.index_select(0, index)[:, start:]
        self.seq_ids = [self.seq_ids[i] for i in rows]
        self.lengths = [self.lengths[i] for i in rows]

    def forward(self, model: Any, last_tokens: Sequence[int]) -> torch.Tensor:
        """One decode step: feeds each row its last token; returns the next-token logits, `[rows, vocab]`."""
        rows = len(self)
        input_ids = torch.tensor(last_tokens, dtype=torch.long, device=self._device).view(rows, 1)
        positions = torch.tensor(self._next_column(), dtype=torch.long, device=self._device).view(rows, 1)
        if bool(self._mask[:, 0].all()):  # no row is padded (always so for one row): the model's fast path
            out = model(input_ids=input_ids, **with_cache(model, self._cache), use_cache=True)
        else:
            out = model(
                input_ids=input_ids,
                attention_mask=self._mask,
                position_ids=positions,
                **with_cache(model, self._cache),
                use_cache=True,
            )
        self._cache = returned_cache(model, out)
        logits: torch.Tensor = out.logits[:, -1, :]
        return logits

    def mixed(self, chunk_cache: Any) -> tuple[Plan, list[int]]:
        """A mixed step's plan (`engine/mixed.py`): the rows' cache gets one more column for their last
        tokens, and the chunk's keys go to `chunk_cache`. Also the rows' positions for those tokens."""
        positions = self._next_column()
        row_mask = None if bool(self._mask[:, 0].all()) else self._mask.bool()[:, None, None, :]
        return Plan(len(self), self._cache, row_mask, chunk_cache), positions

    def _next_column(self) -> list[int]:
        """Adds the column every row's next token goes to; returns the rows' positions for it."""
        self._mask = torch.cat([self._mask, self._mask.new_ones((len(self), 1))], dim=1)
        positions = list(self.lengths)
        self.lengths = [length + 1 for length in self.lengths]
        return positions

    def clear(self) -> None:
        self.keep(set())


def left_padded(prompts: Sequence[Sequence[int]], device: torch.device) -> tuple[torch.Tensor, ...]:
    """Input ids, attention mask and position ids of prompts right-aligned in one `[n, longest]` block."""
    width = max(len(p) for p in prompts)
    ids = torch.zeros((len(prompts), width), dtype=torch.long, device=device)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):
        if prompt:
            ids[row, width - len(prompt) :] = torch.tensor(list(prompt), dtype=torch.long, device=device)
            mask[row, width - len(prompt) :] = 1
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    return ids, mask, positions


def prefill_groups(lengths: Sequence[int], max_tokens: int = 8192, waste: float = 0.25) -> list[list[int]]:
    """Splits prompts (by index) into groups run as one padded forward pass each: similar lengths
    together, at most `waste` of a group's padded block being padding, at most `max_tokens` per block."""
    groups: list[list[int]] = []
    for index in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        group = groups[-1] if groups else None
        if group is not None:
            size = len(group) + 1
            block = size * lengths[index]  # sorted: this prompt is the longest of the group
            real = sum(lengths[i] for i in group) + lengths[index]
            if block <= max_tokens and block - real <= waste * block:
                group.append(index)
                continue
        groups.append([index])
    return groups
