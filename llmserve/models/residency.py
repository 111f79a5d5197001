"""Which models may be in memory at once (`--max-loaded-models`, `--memory-budget`), and who makes room.

A worker about to load asks `Residency.admit` with its footprint (bytes per device: the estimate from its
files, or what its last load measured). If the model fits it takes its place. Otherwise, in order:
1. Idle models give way, least recently used first: each decides on its own thread, between two
   steps, and declines while a request runs or waits for it (nothing in flight is ever evicted). A
   model counts as idle once it has done nothing for `idle_grace` seconds (so not in the gap between
   a client's two requests) or has been resident for its `min_resident`; `keep_alive: -1` models are
   pinned, asked only with `evict_pinned`.
2. Swap-aware turn taking: a busy model resident for at least its `min_resident` seconds is asked to
   yield. It serves the requests that were queued before the waiting load's oldest request, takes no
   later ones, then unloads; its later requests wait in line for their own turn. So two busy models that
   do not fit together take turns of at least `min_resident` seconds instead of swapping per request,
   and no request is passed over for longer than a turn.
Loaders wait in line: first the priority class of the tenant their next request is for, then the least
served of those tenants (its tokens over the last minute, over its weight), then arrival; without keys
files that is arrival order. When nobody can give way within `wait`, their requests get a 503 with
`Retry-After`; a model bigger than a whole device's budget is refused up front (`too_big`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from llmserve.config.keys import PRIORITIES
from llmserve.config.sizes import Budget, Footprint, format_size
from llmserve.errors import ModelTooLarge, Overloaded
from llmserve.models.usage import ANONYMOUS

log = logging.getLogger(__name__)
RELEASE_TIMEOUT = 120.0  # an evicted model frees its memory (gc, cache) well before this
IDLE_GRACE = 0.25  # seconds without work before a model counts as idle (not between two requests)


class Claim(NamedTuple):
    """Whom a model's next waiting request is for (models/fair_queue.py): how loaders are ranked."""

    rank: int = PRIORITIES.index("normal")  # its priority class (0 first)
    tenant: str = ANONYMOUS
    weight: float = 1.0


NO_CLAIM = Claim()  # a request without a tenant


class Resident(Protocol):
    """What residency needs from a model worker."""

    @property
    def unit_id(self) -> str: ...  # the model version (`ID@VERSION`, or the API id): what it is held under

    @property
    def last_active(self) -> float: ...  # time.monotonic() of its last work

    @property
    def loaded_at(self) -> float: ...  # time.monotonic() when its current load began

    @property
    def min_resident(self) -> float: ...

    @property
    def pinned(self) -> bool: ...

    @property
    def closing(self) -> bool: ...  # shutting down: stop waiting for a slot

    def evict(self, timeout: float) -> bool:
        """Unload now if idle, decided on the worker's own thread within `timeout`; True if it agreed
        (it then releases its place once its memory is freed)."""
        ...

    def yield_turn(self, since: float | None) -> None:
        """Finish the requests queued before `since` (monotonic), take no later ones, then unload.
        None: never mind."""
        ...


@dataclass(frozen=True)
class ResidencyView:
    """What the models in memory hold at one moment, and who would give way next (for dashboards)."""

    max_loaded: int | None
    budget: Budget | None  # --memory-budget
    held: Mapping[str, Mapping[str, int]]  # unit id -> bytes per device (measured; estimated while loading)
    eviction_order: tuple[str, ...]  # loaded models that may give way, least recently used first
    waiting: tuple[str, ...]  # loaders in line for room, in arrival order
    evictions: int
    swaps: int


class Residency:
    def __init__(
        self,
        max_loaded: int | None = None,
        *,
        budget: Budget | None = None,
        wait: float = 60.0,
        evict_pinned: bool = False,
        idle_grace: float = IDLE_GRACE,
    ) -> None:
        self.max_loaded = max_loaded
        self.budget = budget
        self.wait = wait
        self.evict_pinned = evict_pinned
        self.idle_grace = idle_grace
        self.evictions = 0  # idle models unloaded to make room, since start
        self.swaps = 0  # busy models that yielded their turn, since start
        self._cond = threading.Condition()
        self._loaded: dict[str, Resident] = {}
        self._held: dict[str, Footprint] = {}
        self._line: list[tuple[str, Claim, int]] = []  # loaders waiting for room, with their arrival
        self._arrivals = 0
        # the tokens a tenant had over the last minute (set by the registry): the least served goes first
        self.served: Callable[[str], float] = lambda tenant: 0.0
        # what the loaded models' requests reserve in KV cache, counted with their weights (set by the
        # registry); the KV ledger asks `weights_left` in turn
        self.kv_reserved: Callable[[str], int] = lambda device: 0

    def loaded(self) -> list[str]:
        with self._cond:
            return list(self._loaded)

    def view(self) -> ResidencyView:
        with self._cond:
            order = sorted(
                (m for m in self._loaded.values() if self.evict_pinned or not m.pinned),
                key=lambda m: m.last_active,
            )
            return ResidencyView(
                max_loaded=self.max_loaded,
                budget=self.budget,
                held={unit: dict(held) for unit, held in self._held.items()},
                eviction_order=tuple(m.unit_id for m in order),
                waiting=tuple(unit for unit, _, _ in sorted(self._line, key=self._turn)),
                evictions=self.evictions,
                swaps=self.swaps,
            )

    def used(self) -> Footprint:
        """Bytes held per device by the models in memory (measured, or estimated while loading)."""
        with self._cond:
            return self._used()

    def _used(self) -> Footprint:
        """Weights (and estimates while loading) plus the KV cache the requests reserve."""
        used = self._weights()
        for device in list(used):
            used[device] += self.kv_reserved(device)
        return used

    def _weights(self) -> Footprint:
        used: Footprint = {}
        for held in self._held.values():
            for device, size in held.items():
                used[device] = used.get(device, 0) + size
        return used

    def weights_left(self, device: str) -> int | None:
        """What the budget of `device` leaves after the models' weights; None: not limited."""
        limit = None if self.budget is None else self.budget.limit(device)
        if limit is None:
            return None
        with self._cond:
            return limit - self._weights().get(device, 0)

    def too_big(self, unit_id: str, need: Footprint) -> ModelTooLarge | None:
        """The error for a model that cannot fit even with every other model unloaded."""
        for device, size in need.items():
            limit = None if self.budget is None else self.budget.limit(device)
            if limit is not None and size > limit:
                return ModelTooLarge(
                    f"model '{unit_id}' needs about {format_size(size)} on {device}, more than the whole "
                    f"--memory-budget there ({format_size(limit)})"
                )
        return None

    def _fits(self, need: Footprint) -> bool:
        if self.max_loaded is not None and len(self._loaded) >= self.max_loaded:
            return False
        used = self._used()
        for device, size in need.items():
            limit = None if self.budget is None else self.budget.limit(device)
            if limit is not None and used.get(device, 0) + size > limit:
                return False
        return True

    def _helps(self, victim: Resident, need: Footprint) -> bool:
        """Unloading `victim` frees something this load lacks (a slot, or bytes on a short device)."""
        if self.max_loaded is not None and len(self._loaded) >= self.max_loaded:
            return True
        used, held = self._used(), self._held.get(victim.unit_id, {})
        for device, size in need.items():
            limit = None if self.budget is None else self.budget.limit(device)
            if limit is not None and used.get(device, 0) + size > limit and held.get(device, 0) > 0:
                return True
        return False

    def _first(self) -> str:
        """The loader whose turn it is (the caller holds `_cond`)."""
        return min(self._line, key=self._turn)[0]

    def _turn(self, entry: tuple[str, Claim, int]) -> tuple[int, float, int]:
        """Loaders take turns by priority, then least served tenant, then arrival."""
        _, claim, arrival = entry
        return claim.rank, self.served(claim.tenant) / claim.weight, arrival

    def admit(self, model: Resident, need: Footprint, since: float, claim: Claim = NO_CLAIM) -> bool:
        """Blocks until `model` holds its place (True) or its wait runs out (False). `need`: its
        footprint; `since`: when its oldest waiting request arrived (monotonic); `claim`: whom its next
        request is for."""
        deadline = time.monotonic() + self.wait
        asked: list[Resident] = []
        with self._cond:
            self._line.append((model.unit_id, claim, self._arrivals))
            self._arrivals += 1
        try:
            while not model.closing:
                with self._cond:
                    if model.unit_id in self._loaded:
                        return True
                    first = self._first() == model.unit_id
                    if first and self._fits(need):
                        self._loaded[model.unit_id] = model
                        self._held[model.unit_id] = dict(need)
                        return True
                    candidates = sorted(
                        (
                            m
                            for m in self._loaded.values()
                            if (self.evict_pinned or not m.pinned) and m not in asked and self._helps(m, need)
                        ),
                        key=lambda m: m.last_active,
                    )
                if first and self._make_room(candidates, need, since, asked, deadline):
                    continue
                with self._cond:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._cond.wait(min(left, 0.25))
            return False
        finally:
            for victim in asked:  # a turn asked for and no longer needed
                if victim.unit_id in self.loaded():
                    victim.yield_turn(None)
            with self._cond:
                self._line = [entry for entry in self._line if entry[0] != model.unit_id]
                self._cond.notify_all()

    def _make_room(
        self,
        candidates: list[Resident],
        need: Footprint,
        since: float,
        asked: list[Resident],
        deadline: float,
    ) -> bool:
        """One step towards room: evict an idle model, or ask a busy one whose time is up to yield."""
        now = time.monotonic()
        for victim in candidates:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            idle_enough = now - victim.last_active >= self.idle_grace
            if (idle_enough or now >= victim.loaded_at + victim.min_resident) and victim.evict(left):
                with self._cond:  # it agreed: its place frees once its memory is returned
                    self.evictions += 1
                    self._cond.wait_for(self._released(victim.unit_id), timeout=RELEASE_TIMEOUT)
                return True
        for victim in candidates:
            if now >= victim.loaded_at + victim.min_resident:
                log.info("asking %s to yield its turn", victim.unit_id)
                victim.yield_turn(since)
                asked.append(victim)
                return False
        return False

    def _released(self, unit_id: str) -> Callable[[], bool]:
        return lambda: unit_id not in self._loaded

    def no_room(self, unit_id: str) -> Overloaded:
        """The error of the requests whose model found no room within the wait."""
        limits = []
        if self.max_loaded is not None:
            limits.append(f"{self.max_loaded} model(s) loaded and busy (--max-loaded-models)")
        if self.budget is not None:
            limits.append(f"--memory-budget {self.budget.describe()} in use by busy models")
        return Overloaded(
            f"no room to load model '{unit_id}': {'; '.join(limits)}; retry shortly", retry_after=1
        )

    def measured(self, unit_id: str, footprint: Footprint) -> None:
        """The model is loaded and `footprint` is what it really holds (replaces the estimate)."""
        with self._cond:
            if unit_id in self._held:
                self._held[unit_id] = dict(footprint)
            over = [d for d, size in self._used().items() if self._over(d, size)]
        if over:
            log.warning(
                "models in memory exceed --memory-budget on %s after loading %s", ", ".join(over), unit_id
            )

    def _over(self, device: str, size: int) -> bool:
        limit = None if self.budget is None else self.budget.limit(device)
        return limit is not None and size > limit

    def yielded(self) -> None:
        with self._cond:
            self.swaps += 1

    def release(self, unit_id: str) -> None:
        """`unit_id` is no longer in memory (unloaded, evicted, failed)."""
        with self._cond:
            self._loaded.pop(unit_id, None)
            self._held.pop(unit_id, None)
            self._cond.notify_all()
