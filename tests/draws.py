"""The token ids the sampler draws from a fixed logit vector, over many seeded draws."""

from __future__ import annotations

import torch

from llmserve.engine.base import GenerationParams
from llmserve.engine.sampling import sample

LOGITS = torch.tensor([0.0, 5.0, 4.0, 1.0, 4.5])


def draws(params: GenerationParams, n: int = 400) -> set[int]:
    generator = torch.Generator().manual_seed(0)
    return {sample(LOGITS, params, generator) for _ in range(n)}
