"""A mixed step: the decoding rows of the batch and a chunk of a new prompt in one forward pass.

Read on its own, a prompt chunk is a second pass over every weight: on the CPU a decode step of SmolLM2 in
float32 is ~58 ms, nearly all of it reading the weights, and a 16-token chunk at position 7,000 read beside
it added ~170 ms, so a stream beside a long prompt waited ~4x its idle inter-token time. A mixed step packs
the rows' last tokens and the chunk's tokens into one sequence (`[1, rows + chunk]`), so the projections and
the MLPs read the weights once for all of them; only attention is per owner: `MixedCache.update` appends the
new keys and values to the batch's left-padded cache (one per row) and to the prompt's own cache (the
chunk), and `attend` (called by `attention.grouped_sdpa` while a plan is current in this thread) runs the
rows' queries against the batch's cache and the chunk's queries, causally, against the prompt's cache.

Only decoder layers that call the attention interface with `module.layer_idx` and update their cache once
per layer can be mixed: the model types in `MIXABLE` (tests compare each sequence's tokens with its tokens
alone), and only with llmserve's attention function.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache

MIXABLE = frozenset({"llama", "mistral", "qwen2", "qwen3"})
ATTENTION = "llmserve_sdpa"  # the attention function that serves a plan (`attention.grouped_sdpa`)

_local = threading.local()


@dataclass
class Plan:
    """One mixed step: `rows` decoding rows first in the packed input, then the chunk's tokens."""

    rows: int
    batch_cache: Any  # the batch's DynamicCache, `[rows, kv_heads, width, head_dim]` per layer
    row_mask: torch.Tensor | None  # `[rows, 1, 1, width + 1]` (True: attend), None when no row is padded
    chunk_cache: Any  # the prompt's own cache
    kv: dict[int, tuple[torch.Tensor, ...]] = field(default_factory=dict)  # per layer, until attended
    chunk_mask: torch.Tensor | None = None  # the chunk's causal mask, made at the first layer


def mixable(model: Any) -> bool:
    """Whether `model` can run mixed steps: a model type in `MIXABLE` whose attention is llmserve's
    (`attention.NAME`, set on the CPU; elsewhere a layer would attend to the new tokens only)."""
    config = model.config
    return getattr(config, "model_type", None) in MIXABLE and config._attn_implementation == ATTENTION


class MixedCache(DynamicCache):
    """The cache handed to a mixed step's forward pass: it splits each layer's new keys and values between the
    batch's cache and the prompt's."""

    def __init__(self, config: Any, plan: Plan) -> None:
        super().__init__(config=config)
        self.plan = plan

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        plan = self.plan
        rows = plan.rows
        row_keys = key_states[0, :, :rows, :].transpose(0, 1).unsqueeze(2)  # [rows, kv_heads, 1, head_dim]
        row_values = value_states[0, :, :rows, :].transpose(0, 1).unsqueeze(2)
        batch_keys, batch_values = plan.batch_cache.layers[layer_idx].update(row_keys, row_values)
        chunk_keys, chunk_values = plan.chunk_cache.layers[layer_idx].update(
            key_states[:, :, rows:, :], value_states[:, :, rows:, :]
        )
        plan.kv[layer_idx] = (batch_keys, batch_values, chunk_keys, chunk_values)
        return key_states, value_states

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0

    def get_mask_sizes(self, query_length: int, layer_idx: int = 0) -> tuple[int, int]:
        return query_length, 0


@contextmanager
def current(plan: Plan) -> Iterator[None]:
    """Makes `plan` the one `attend` serves in this thread for the duration of a forward pass."""
    _local.plan = plan
    try:
        yield
    finally:
        _local.plan = None


def current_plan() -> Plan | None:
    plan: Plan | None = getattr(_local, "plan", None)
    return plan


def attend(module: Any, query: torch.Tensor, plan: Plan, scaling: float | None) -> torch.Tensor:
    """The attention output of a mixed step's layer, `[1, rows + chunk, heads, head_dim]`."""
    batch_keys, batch_values, chunk_keys, chunk_values = plan.kv.pop(int(module.layer_idx))
    rows = plan.rows
    _, heads, tokens, dim = query.shape
    kv_heads = batch_keys.shape[1]
    groups = heads // kv_heads
    # the rows: one query each, its group's heads packed as rows of its KV head
    row_query = query[0, :, :rows, :].transpose(0, 1).reshape(rows, kv_heads, groups, dim)
    row_out = torch.nn.functional.scaled_dot_product_attention(
        row_query, batch_keys, batch_values, attn_mask=plan.row_mask, scale=scaling
    )
    row_out = row_out.reshape(1, rows, heads, dim)
    # the chunk: causal within itself, everything before it in its prompt
    chunk = tokens - rows
    mask = plan.chunk_mask
    if mask is None:  # [1, 1, groups x chunk, seen]: each token sees the prompt up to itself
        seen = chunk_keys.shape[-2]
        columns = torch.arange(seen, device=query.device)
        last_seen = torch.arange(seen - chunk, seen, device=query.device)
        mask = plan.chunk_mask = (columns[None, :] <= last_seen[:, None]).repeat(groups, 1)[None, None]
    chunk_query = query[:, :, rows:, :].reshape(1, kv_heads, groups * chunk, dim)
    chunk_out = torch.nn.functional.scaled_dot_product_attention(
        chunk_query, chunk_keys, chunk_values, attn_mask=mask, scale=scaling
    )
    chunk_out = chunk_out.reshape(1, heads, chunk, dim).transpose(1, 2)
    return torch.cat([row_out, chunk_out], dim=1).contiguous()
