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

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

KV_SHARE = 0.8  # of the memory left after the weights, what the KV cache may take when derived


@dataclass(frozen=True)
class KVBudget:
    """A loaded model's KV budget: `tokens` slots of `bytes_per_token`; `padded`: one left-padded cache."""

    tokens: int
    bytes_per_token: int
    padded: bool
    source: str  # "kv_cache_memory" (set) or "derived"
    device: str = "cpu"  # where the cache lives
    allocated: bool = False  # allocated whole at load (llama.cpp): no reservation on the device's memory
    room: Callable[[int], bool] | None = None  # the engine's own answer to `fits` (it places sequences)

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
        """Whether a request reaching `end` fits beside requests reaching `running`."""
        if self.room is not None:
            return self.room(end)
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


class KVLedger:
    """What the loaded models' requests reserve in KV cache, per device, across all models: a request
    is admitted only when every model's reservations together fit what the device can give the KV
    cache now, `KV_SHARE` of (what is free + what the caches already hold), and, with a memory
    budget, what the budget leaves after the weights. So two models whose budgets were each derived
    from the same free memory cannot together exceed it.

    Workers call it from their own threads; `available` reads the device's free memory (engine/memory)."""

    def __init__(
        self,
        available: Callable[[str], int | None],
        budget_left: Callable[[str], int | None] = lambda device: None,
    ) -> None:
        self._available = available
        self._budget_left = budget_left
        self._lock = threading.Lock()
        self._reserved: dict[str, tuple[str, int]] = {}  # unit id -> (device, bytes)
        self._held: dict[str, Callable[[], int]] = {}  # unit id -> bytes its caches hold now

    def track(self, unit_id: str, held: Callable[[], int]) -> None:
        with self._lock:
            self._held[unit_id] = held

    def forget(self, unit_id: str) -> None:
        with self._lock:
            self._reserved.pop(unit_id, None)
            self._held.pop(unit_id, None)

    def reserved(self, device: str | None = None) -> int:
        with self._lock:
            return sum(b for d, b in self._reserved.values() if device is None or d == device)

    def pool(self, device: str) -> int | None:
        """Bytes the KV caches of all models on `device` may reserve now; None: unknown (no limit)."""
        with self._lock:
            held = sum(f() for u, f in self._held.items() if self._reserved.get(u, ("", 0))[0] == device)
        free = self._available(device)
        from_free = None if free is None else int((free + held) * KV_SHARE)
        left = self._budget_left(device)
        known = [n for n in (from_free, left) if n is not None]
        return min(known) if known else None

    def try_reserve(self, unit_id: str, device: str, total: int) -> bool:
        """Sets `unit_id`'s reservation on `device` to `total` bytes if all reservations then fit the pool
        (a smaller one always does)."""
        pool = self.pool(device)
        with self._lock:
            previous = self._reserved.get(unit_id, (device, 0))[1]
            others = sum(b for u, (d, b) in self._reserved.items() if d == device and u != unit_id)
            if total > previous and pool is not None and others + total > pool:
                return False
            self._reserved[unit_id] = (device, total)
            return True

    def others_reserve(self, unit_id: str, device: str) -> bool:
        """Whether another model holds a reservation on `device` (so waiting can free room)."""
        with self._lock:
            return any(b > 0 for u, (d, b) in self._reserved.items() if d == device and u != unit_id)
