"""Attention for grouped-query models on the CPU without copying the keys and values per query head.

transformers' SDPA path hands torch the grouped keys and values (`enable_gqa`) only when no attention mask is
given, because CUDA's fast kernels take no mask with it; with a mask it repeats every layer's keys and values
once per query head first (`repeat_kv`). llmserve passes a mask whenever rows are padded or a prompt is read
in chunks beside a cache, and then that copy is most of the pass: SmolLM2 (9 query heads on 3 KV heads), 16
prompt tokens at position 2,000 on the CPU took 175 ms with the copy. `llmserve_sdpa` packs each group's
queries onto its KV head instead (`grouped_sdpa`); everything else goes to transformers' own function.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from llmserve.engine.mixed import ATTENTION, attend, current_plan

log = logging.getLogger(__name__)

NAME = ATTENTION


def grouped_sdpa(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' SDPA attention, except for a masked multi-token pass of a grouped-query layer on the CPU:
    the queries of each group are packed as rows of their KV head (`[batch, kv_heads, groups x tokens,
    head_dim]`, the mask repeated to match), so the keys and values are read once per KV head, neither
    copied nor re-read per query head. transformers packs the same way for one token; torch's kernel
    otherwise walks each query head's whole context. In a mixed step (`engine/mixed.py`) the plan says whose
    keys each query reads."""
    plan = current_plan()
    if plan is not None:
        return attend(module, query, plan, scaling), None
    groups = int(getattr(module, "num_key_value_groups", 1))
    tokens = query.shape[2]
    plain = kwargs.get("position_bias") is None and kwargs.get("softcap") is None and not dropout
    shared_mask = attention_mask is not None and attention_mask.dim() == 4 and attention_mask.shape[1] == 1
    if query.device.type == "cpu" and groups > 1 and tokens > 1 and shared_mask and plain:
        assert attention_mask is not None
        batch, heads, _, dim = query.shape
        packed = query.reshape(batch, heads // groups, groups * tokens, dim)
        mask = attention_mask.repeat(1, 1, groups, 1)
        out = torch.nn.functional.scaled_dot_product_attention(
            packed, key, value, attn_mask=mask, scale=scaling
        )
        return out.reshape(batch, heads, tokens, dim).transpose(1, 2).contiguous(), None
    result: tuple[torch.Tensor, None] = sdpa_attention_forward(
        module,
        query,
        key,
        value,
        attention_mask,
        dropout=dropout,
        scaling=scaling,
        is_causal=is_causal,
        **kwargs,
    )
    return result


AttentionInterface.register(NAME, grouped_sdpa)
AttentionMaskInterface.register(NAME, sdpa_mask)


def use_grouped_sdpa(model: Any, device: torch.device) -> None:
    """Switches a model loaded with SDPA attention on the CPU to `grouped_sdpa`."""
    if device.type != "cpu" or getattr(model.config, "_attn_implementation", None) != "sdpa":
        return
    model.set_attn_implementation(NAME)
    log.debug("attention: %s (grouped keys and values read as they are)", NAME)
