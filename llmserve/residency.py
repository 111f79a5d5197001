"""How many models may be in memory at once (`--max-loaded-models`), and who makes room.

A worker about to load asks `Residency.admit`. If a slot is free it takes it. Otherwise the least
recently used loaded models are asked, one by one, to give theirs up: each decides on its own thread,
between two steps, and declines while a request runs or waits for it (so nothing in flight is ever
evicted); a model with `keep_alive: -1` is pinned and only asked when `evict_pinned` is set. When
nobody can give way, loaders wait their turn, first come first served, until a slot frees or their
`wait` runs out; then their requests get a 503 with `Retry-After`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from llmserve.errors import Overloaded

RELEASE_TIMEOUT = 120.0  # an evicted model frees its memory (gc, cache) well before this


class Resident(Protocol):
    """What residency needs from a model worker."""

    @property
    def api_id(self) -> str: ...

    @property
    def last_active(self) -> float: ...  # time.monotonic() of its last work

    @property
    def pinned(self) -> bool: ...

    @property
    def closing(self) -> bool: ...  # shutting down: stop waiting for a slot

    def evict(self, timeout: float) -> bool:
        """Unload now if idle, decided on the worker's own thread within `timeout`; True if it agreed
        (it then releases its slot once its memory is freed)."""
        ...


class Residency:
    def __init__(self, max_loaded: int, *, wait: float = 60.0, evict_pinned: bool = False) -> None:
        self.max_loaded = max_loaded
        self.wait = wait
        self.evict_pinned = evict_pinned
        self.evictions = 0  # models unloaded to make room, since start
        self._cond = threading.Condition()
        self._loaded: dict[str, Resident] = {}
        self._line: deque[str] = deque()  # loaders waiting for a slot, in arrival order

    def loaded(self) -> list[str]:
        with self._cond:
            return list(self._loaded)

    def admit(self, model: Resident) -> bool:
        """Blocks until `model` holds a slot (True) or its wait runs out (False)."""
        deadline = time.monotonic() + self.wait
        with self._cond:
            self._line.append(model.api_id)
        try:
            while not model.closing:
                with self._cond:
                    if model.api_id in self._loaded:
                        return True
                    first = self._line[0] == model.api_id
                    if first and len(self._loaded) < self.max_loaded:
                        self._loaded[model.api_id] = model
                        return True
                    victims = sorted(
                        (m for m in self._loaded.values() if self.evict_pinned or not m.pinned),
                        key=lambda m: m.last_active,
                    )
                if first and self._make_room(victims, deadline):
                    continue
                with self._cond:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._cond.wait(min(left, 0.5))
            return False
        finally:
            with self._cond:
                self._line.remove(model.api_id)
                self._cond.notify_all()

    def _make_room(self, victims: list[Resident], deadline: float) -> bool:
        for victim in victims:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if victim.evict(left):  # it agreed: its slot frees once its memory is returned
                with self._cond:
                    self.evictions += 1
                    self._cond.wait_for(self._released(victim.api_id), timeout=RELEASE_TIMEOUT)
                return True
        return False

    def _released(self, api_id: str) -> Callable[[], bool]:
        return lambda: api_id not in self._loaded

    def no_room(self, api_id: str) -> Overloaded:
        """The error of the requests whose model found no slot within the wait."""
        return Overloaded(
            f"no room to load model '{api_id}': {self.max_loaded} model(s) loaded and busy "
            "(--max-loaded-models); retry shortly",
            retry_after=1,
        )

    def release(self, api_id: str) -> None:
        """`api_id` is no longer in memory (unloaded, evicted, failed)."""
        with self._cond:
            self._loaded.pop(api_id, None)
            self._cond.notify_all()
