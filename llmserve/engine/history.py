"""What sampling keeps per sequence without torch: a sequence's history for the penalties, and the
temperature under which sampling is greedy. Torch-free, so that an engine that needs torch only to
sample (llama.cpp) imports it only for the first request that samples."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

GREEDY_BELOW = 1e-5  # a smaller temperature overflows the logits: it is greedy in effect


@dataclass
class History:
    """What a sequence has seen, for the penalties: its prompt and the tokens generated so far."""

    prompt: Sequence[int] = ()
    generated: list[int] = field(default_factory=list)
