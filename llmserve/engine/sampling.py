"""Choosing the next token from logits, with each sequence's own parameters and random generator."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch

from llmserve.engine.base import GenerationParams, TokenLogprob
from llmserve.engine.history import GREEDY_BELOW, History

__all__ = ["GREEDY_BELOW", "History", "sample", "sample_rows", "shape", "token_logprob"]


def shape(
    logits: torch.Tensor, params: GenerationParams, history: History, enders: Collection[int]
) -> torch.Tensor:
    """A 1-D logits vector after logit_bias, min_tokens (no ending token yet: `enders`), the repetition
    penalty (prompt and output, transformers' rule) and the presence and frequency penalties (output)."""
    out = logits.float().clone()
    vocab = out.shape[-1]
    if params.logit_bias:
        ids = torch.tensor([i for i, _ in params.logit_bias], dtype=torch.long, device=out.device)
        out[ids] += torch.tensor([b for _, b in params.logit_bias], dtype=out.dtype, device=out.device)
    if len(history.generated) < params.min_tokens:
        banned = [i for i in (*enders, *params.stop_token_ids) if 0 <= i < vocab]
        out[torch.tensor(banned, dtype=torch.long, device=out.device)] = float("-inf")
    if params.repetition_penalty != 1.0:
        seen = torch.tensor(
            sorted({*history.prompt, *history.generated}), dtype=torch.long, device=out.device
        )
        if len(seen):
            values = out[seen]
            penalty = params.repetition_penalty
            out[seen] = torch.where(values > 0, values / penalty, values * penalty)
    if (params.presence_penalty or params.frequency_penalty) and history.generated:
        ids = torch.tensor(history.generated, dtype=torch.long, device=out.device)
        counts = torch.zeros(vocab, dtype=out.dtype, device=out.device).index_add_(
            0, ids, torch.ones(len(ids), dtype=out.dtype, device=out.device)
        )
        out -= counts * params.frequency_penalty + (counts > 0).to(out.dtype) * params.presence_penalty
    return out


def sample(logits: torch.Tensor, params: GenerationParams, generator: torch.Generator | None) -> int:
    """One token from a 1-D logits vector: greedy at temperature 0, else temperature, top-k, top-p,
    min-p."""
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
    if params.min_p > 0.0:
        probs = probs.masked_fill(probs < params.min_p * probs.max(), 0.0)
    if not bool(torch.isfinite(probs).all()) or float(probs.sum()) <= 0.0:
        return int(torch.argmax(logits).item())  # extreme penalties overflowed: the likeliest token
    return int(torch.multinomial(probs, 1, generator=generator).item())


def sample_rows(
    logits: torch.Tensor,
    params: Sequence[GenerationParams],
    generators: Sequence[torch.Generator | None],
    histories: Sequence[History] | None = None,
    enders: Collection[int] = (),
) -> list[int]:
    """One token per row of `[rows, vocab]` logits: one argmax for all greedy rows, then the others.
    Rows whose parameters shape the logits (penalties, bias, min_tokens) are shaped first."""
    tokens: list[int] = logits.argmax(dim=-1).tolist()
    for row, (row_params, generator) in enumerate(zip(params, generators, strict=True)):
        row_logits = logits[row]
        if row_params.shapes_logits:
            row_logits = shape(row_logits, row_params, histories[row] if histories else History(), enders)
            tokens[row] = int(torch.argmax(row_logits).item())
        if row_params.temperature >= GREEDY_BELOW:
            tokens[row] = sample(row_logits, row_params, generator)
    return tokens


def token_logprob(logits: torch.Tensor, token: int, top: int) -> TokenLogprob:
    """`token`'s log probability under the raw `logits` (1-D) and the `top` most likely tokens."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    best = torch.topk(logprobs, top) if top else None
    alternatives = (
        () if best is None else tuple(zip(best.indices.tolist(), best.values.tolist(), strict=True))
    )
    return TokenLogprob(token, float(logprobs[token]), alternatives)
