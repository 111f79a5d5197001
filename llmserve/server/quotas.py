"""A key's quotas (the keys file's `requests_per_minute`, `tokens_per_minute`, `max_concurrent`) over the
counts of `models/usage.py`: whether a request may start, and OpenAI's `x-ratelimit-*` headers.

Both limits are sliding windows of one minute. A request is counted when it is let in; tokens as they
happen, so a request may take its key past `tokens_per_minute` (the next ones wait until the window has
room again). Nothing is refused by a guess of tokens to come. The headers are computed from the same
counts when the response starts, so they never say more or less than the counters hold.
"""

from __future__ import annotations

import math

from llmserve.config.keys import KeyEntry
from llmserve.errors import ConcurrencyLimited, RateLimited, TokensRateLimited
from llmserve.models.usage import Usage, Window


def duration(seconds: float) -> str:
    """OpenAI's (Go's) way of writing a reset time: `0s`, `250ms`, `1.5s`, `6m0s`."""
    ms = math.ceil(max(0.0, seconds) * 1000)
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    minutes, rest = divmod(ms, 60_000)
    text = f"{rest / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{minutes}m{text}" if minutes else text


class Quotas:
    """The event loop's gate for keys with limits: `begin` before a request, `end` after it."""

    def __init__(self, usage: Usage) -> None:
        self.usage = usage
        self._in_flight: dict[str, int] = {}

    def in_flight(self, name: str) -> int:
        return self._in_flight.get(name, 0)

    def begin(self, entry: KeyEntry) -> None:
        """Lets a request of `entry` in and counts it, or raises a `RateLimited` (counting nothing)."""
        name, limits = entry.name, entry.limits
        running = self.in_flight(name)
        if limits.max_concurrent is not None and running >= limits.max_concurrent:
            raise ConcurrencyLimited(
                f"Too many requests in flight for '{name}': {running}, the most its key allows "
                f"(max_concurrent). Please try again when one of them has ended.",
                retry_after=1.0,
            )
        window = self.usage.window(name)
        rpm, tpm = limits.requests_per_minute, limits.tokens_per_minute
        if rpm is not None and window.requests >= rpm:
            wait = window.below_in(rpm, tokens=False)
            raise RateLimited(
                f"Rate limit reached for '{name}' on requests per min (RPM): Limit {rpm}, Used "
                f"{window.requests}, Requested 1. Please try again in {duration(wait)}.",
                retry_after=wait,
            )
        if tpm is not None and window.tokens >= tpm:
            wait = window.below_in(tpm, tokens=True)
            raise TokensRateLimited(
                f"Rate limit reached for '{name}' on tokens per min (TPM): Limit {tpm}, Used "
                f"{window.tokens}. Please try again in {duration(wait)}.",
                retry_after=wait,
            )
        self.usage.request(name)
        self._in_flight[name] = running + 1

    def end(self, entry: KeyEntry) -> None:
        left = self.in_flight(entry.name) - 1
        if left > 0:
            self._in_flight[entry.name] = left
        else:
            self._in_flight.pop(entry.name, None)

    def headers(self, entry: KeyEntry) -> list[tuple[str, str]]:
        """`x-ratelimit-limit-*`, `-remaining-*` and `-reset-*` of the limits the key has, now."""
        window = self.usage.window(entry.name)
        out: list[tuple[str, str]] = []
        for kind, limit, tokens in (
            ("requests", entry.limits.requests_per_minute, False),
            ("tokens", entry.limits.tokens_per_minute, True),
        ):
            if limit is not None:
                out += _headers(kind, limit, window, tokens)
        return out


def _headers(kind: str, limit: int, window: Window, tokens: bool) -> list[tuple[str, str]]:
    used = window.tokens if tokens else window.requests
    return [
        (f"x-ratelimit-limit-{kind}", str(limit)),
        (f"x-ratelimit-remaining-{kind}", str(max(0, limit - used))),
        (f"x-ratelimit-reset-{kind}", duration(window.empty_in(tokens))),
    ]
