"""How many tokens of KV cache a model's requests may hold, and whether one more request fits.

Each admitted request reserves the cache it may come to need: its prompt plus its `max_tokens` (clamped
to what the model holds), so generation can never outgrow its reservation. The HF engine keeps the
running sequences in one left-padded cache, which holds rows x the longest row: the cost of a set of
requests is then `len(set) x max(end)` (an engine that steps each sequence alone costs the sum of the
ends). A request is admitted when the cost with it stays within the budget; otherwise it waits in line.

The budget (tokens = bytes / the engine's bytes per token) is the model's `kv_cache_memory` (or
`--kv-cache-memory`) when set; else derived when the model loads, from what the device has left (on the
host: the memory cgroup's limit minus its usage, and MemAvailable) and from the `--memory-budget` left
after the models already held, times `KV_SHARE`: the rest is for prefill activations and everything else.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

KV_SHARE = 0.8  # of the memory left after the weights, what the KV cache may take when derived


@dataclass(frozen=True)
class KVBudget:
    """A loaded model's KV budget: `tokens` slots of `bytes_per_token`; `padded`: one left-padded cache."""

    tokens: int
    bytes_per_token: int
    padded: bool
    source: str  # "kv_cache_memory" (set) or "derived"

    @property
    def bytes(self) -> int:
        return self.tokens * self.bytes_per_token

    def cost(self, ends: Iterable[int]) -> int:
        """Token slots that requests reaching `ends` (prompt + max_tokens each) may hold at once."""
        ends = list(ends)
        if not ends:
            return 0
        return len(ends) * max(ends) if self.padded else sum(ends)

    def fits(self, running: Iterable[int], end: int) -> bool:
        return self.cost([*running, end]) <= self.tokens


def budget_tokens(memory: int, bytes_per_token: int) -> int:
    return memory // max(1, bytes_per_token)


def derived_memory(available: int | None, budget_left: int | None) -> int | None:
    """Bytes for the KV cache from what the device has left now (`available`, the weights already
    loaded) and what `--memory-budget` leaves (`budget_left`); None when neither is known."""
    known = [n for n in (available, budget_left) if n is not None]
    if not known:
        return None
    return int(max(0, min(known)) * KV_SHARE)
