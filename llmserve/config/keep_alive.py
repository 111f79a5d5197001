"""keep_alive: how long a model stays loaded once it has nothing to do (Ollama's semantics).

A value is seconds (a number, or a string such as "90s", "5m", "1h30m"); any negative value means never
unload, 0 means unload as soon as the model is idle. The worker owns the clock.
"""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import AfterValidator

NEVER = math.inf
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_keep_alive(value: object) -> float:
    """Seconds (`NEVER` for a negative value); raises ValueError with a readable message."""
    if isinstance(value, bool):
        raise ValueError('keep_alive is a number of seconds or a duration such as "5m"')
    if isinstance(value, int | float):
        if math.isnan(value):
            raise ValueError('keep_alive is a number of seconds or a duration such as "5m"')
        return NEVER if value < 0 else float(value)
    if isinstance(value, str):
        text = value.strip().lower()
        try:
            return parse_keep_alive(float(text))
        except ValueError:
            pass
        negative = text.startswith("-")
        body = text.removeprefix("-")
        parts = _PART.findall(body)
        if body and parts and "".join(number + unit for number, unit in parts) == body:
            return NEVER if negative else sum(float(n) * _UNIT[u] for n, u in parts)
    raise ValueError(f'keep_alive {value!r} is not seconds or a duration such as "90s", "5m", "1h30m", -1')


def _checked(value: int | float | str | None) -> int | float | str | None:
    if value is not None:
        parse_keep_alive(value)
    return value


# A keep_alive field as written (config entry, request body): validated, parsed where it is used.
KeepAliveField = Annotated[int | float | str | None, AfterValidator(_checked)]


class IdleTimer:
    """When an idle, loaded model should be unloaded. `keep_alive` is the model's current value: the
    config's, until a request brings its own (which then holds from that request on)."""

    def __init__(self, keep_alive: float) -> None:
        self.keep_alive = keep_alive
        self.deadline: float | None = None  # monotonic time; None while busy, unloaded, or never

    def busy(self) -> None:
        self.deadline = None

    def idle(self, now: float) -> None:
        """The model has just become idle (call once per idle period)."""
        if self.deadline is None and self.keep_alive != NEVER:
            self.deadline = now + self.keep_alive

    def remaining(self, now: float) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - now)

    def expired(self, now: float) -> bool:
        return self.deadline is not None and now >= self.deadline

    def due(self, now: float, *, idle: bool) -> bool:
        """One look per loop turn: True once when an idle model's time is up (the timer then stops)."""
        if not idle:
            self.busy()
            return False
        self.idle(now)
        if self.expired(now):
            self.busy()
            return True
        return False

    def sleep(self, now: float) -> float | None:
        """How long the loop may sleep before the time is up (capped: queue timeouts overflow)."""
        remaining = self.remaining(now)
        return None if remaining is None else min(remaining, 3600.0)
