"""Choosing the next token from logits, with each sequence's own parameters and random generator."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from llmserve.engine.base import GenerationParams

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


def sample_rows(
    logits: torch.Tensor, params: Sequence[GenerationParams], generators: Sequence[torch.Generator | None]
) -> list[int]:
    """One token per row of `[rows, vocab]` logits: one argmax for all greedy rows, then the others."""
    tokens: list[int] = logits.argmax(dim=-1).tolist()
    for row, (row_params, generator) in enumerate(zip(params, generators, strict=True)):
        if row_params.temperature >= GREEDY_BELOW:
            tokens[row] = sample(logits[row], row_params, generator)
    return tokens
