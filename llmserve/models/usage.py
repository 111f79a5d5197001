"""What each tenant used: its requests, and per model its requests and tokens, over the last minute, the
last hour and since start. Tokens are counted as they happen (a prompt when its request is admitted, each
generated token as the worker's thread produces it), so the quotas (server/quotas.py), the fair queues and
the usage endpoints read the same figures. In memory only: a restart forgets everything.

Windows are kept in buckets (one second wide for the minute, one minute wide for the hour); a bucket
counts while any part of it lies in the window, so a count is never lower than the exact sliding one.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

ANONYMOUS = "-"  # the tenant of every request on a server without keys
MINUTE, HOUR = 60.0, 3600.0


@dataclass
class Tally:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, requests: int = 0, prompt: int = 0, completion: int = 0) -> None:
        self.requests += requests
        self.prompt_tokens += prompt
        self.completion_tokens += completion

    def plus(self, other: Tally) -> Tally:
        return Tally(
            self.requests + other.requests,
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
        )

    def as_json(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.tokens,
        }


class Buckets:
    """Tallies in buckets `width` seconds wide over the last `span` seconds."""

    def __init__(self, width: float, span: float) -> None:
        self.width, self.span = width, span
        self._buckets: deque[tuple[int, Tally]] = deque()

    def leaves_at(self, index: int) -> float:
        """When the bucket `index` drops out of the window."""
        return (index + 1) * self.width + self.span

    def add(self, now: float, requests: int = 0, prompt: int = 0, completion: int = 0) -> None:
        index = int(now // self.width)
        if not self._buckets or self._buckets[-1][0] != index:
            self._buckets.append((index, Tally()))
        self._buckets[-1][1].add(requests, prompt, completion)
        self._expire(now)

    def _expire(self, now: float) -> None:
        while self._buckets and self.leaves_at(self._buckets[0][0]) <= now:
            self._buckets.popleft()

    def total(self, now: float) -> Tally:
        self._expire(now)
        out = Tally()
        for _, tally in self._buckets:
            out = out.plus(tally)
        return out

    def entries(self, now: float) -> tuple[tuple[float, int, int], ...]:
        """(when it leaves the window, requests, tokens) per bucket, oldest first."""
        self._expire(now)
        return tuple((self.leaves_at(i), t.requests, t.tokens) for i, t in self._buckets)


@dataclass(frozen=True)
class Window:
    """A tenant's last minute as the quotas read it: per bucket (leaves at, requests, tokens)."""

    now: float
    entries: tuple[tuple[float, int, int], ...]

    @property
    def requests(self) -> int:
        return sum(e[1] for e in self.entries)

    @property
    def tokens(self) -> int:
        return sum(e[2] for e in self.entries)

    def below_in(self, limit: int, tokens: bool) -> float:
        """Seconds until the count (of tokens, else requests) is below `limit` (0: it is now)."""
        count = self.tokens if tokens else self.requests
        if count < limit:
            return 0.0
        for leaves, requests, used in self.entries:
            count -= used if tokens else requests
            if count < limit:
                return max(0.0, leaves - self.now)
        return 0.0

    def empty_in(self, tokens: bool) -> float:
        """Seconds until nothing (tokens, else requests) is left in the window."""
        counted = [leaves for leaves, requests, used in self.entries if (used if tokens else requests)]
        return max(0.0, counted[-1] - self.now) if counted else 0.0


@dataclass
class _Spans:
    minute: Buckets = field(default_factory=lambda: Buckets(1.0, MINUTE))
    hour: Buckets = field(default_factory=lambda: Buckets(60.0, HOUR))
    total: Tally = field(default_factory=Tally)

    def add(self, now: float, requests: int = 0, prompt: int = 0, completion: int = 0) -> None:
        self.minute.add(now, requests, prompt, completion)
        self.hour.add(now, requests, prompt, completion)
        self.total.add(requests, prompt, completion)

    def as_json(self, now: float) -> dict[str, dict[str, int]]:
        return {
            "last_minute": self.minute.total(now).as_json(),
            "last_hour": self.hour.total(now).as_json(),
            "since_start": self.total.as_json(),
        }


@dataclass
class _Tenant:
    spans: _Spans = field(default_factory=_Spans)  # its requests (all of them) and its tokens (every model)
    models: dict[str, _Spans] = field(default_factory=dict)  # by unit id: requests that reached it, tokens
    rate_limited: int = 0
    forbidden: int = 0


@dataclass(frozen=True)
class TenantTotals:
    """Since start, for the metrics."""

    requests: int
    models: dict[str, Tally]
    rate_limited: int
    forbidden: int


class Usage:
    """Thread-safe: the event loop counts requests, the workers' threads count tokens."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.started = time.time()
        self._lock = threading.Lock()
        self._tenants: dict[str, _Tenant] = {}
        # called with (tenant, seconds) each time a request leaves a model's queue (metrics)
        self.on_wait: list[Callable[[str, float], None]] = []

    def _of(self, tenant: str) -> _Tenant:
        found = self._tenants.get(tenant)
        if found is None:
            found = self._tenants[tenant] = _Tenant()
        return found

    def request(self, tenant: str) -> None:
        """A request of `tenant` was accepted (what `requests_per_minute` counts)."""
        with self._lock:
            self._of(tenant).spans.add(self.clock(), requests=1)

    def model_request(self, tenant: str, unit: str) -> None:
        """A request of `tenant` reached the model `unit`."""
        with self._lock:
            self._model(tenant, unit).add(self.clock(), requests=1)

    def _model(self, tenant: str, unit: str) -> _Spans:
        models = self._of(tenant).models
        found = models.get(unit)
        if found is None:
            found = models[unit] = _Spans()
        return found

    def tokens(self, counts: Iterable[tuple[str, str, int, int]]) -> None:
        """(tenant, unit, prompt tokens, completion tokens) as they happen."""
        with self._lock:
            now = self.clock()
            for tenant, unit, prompt, completion in counts:
                self._of(tenant).spans.add(now, prompt=prompt, completion=completion)
                self._model(tenant, unit).add(now, prompt=prompt, completion=completion)

    def rejected(self, tenant: str, status: int) -> None:
        """A response of `tenant` was a 429 or a 403."""
        with self._lock:
            found = self._of(tenant)
            if status == 429:
                found.rate_limited += 1
            elif status == 403:
                found.forbidden += 1

    def waited(self, tenant: str, seconds: float) -> None:
        for listener in self.on_wait:
            listener(tenant, seconds)

    def window(self, tenant: str) -> Window:
        with self._lock:
            now = self.clock()
            return Window(now, self._of(tenant).spans.minute.entries(now))

    def recent_tokens(self, tenant: str) -> int:
        """The tenant's tokens over the last minute, every model together."""
        with self._lock:
            found = self._tenants.get(tenant)
            return 0 if found is None else found.spans.minute.total(self.clock()).tokens

    def totals(self) -> dict[str, TenantTotals]:
        with self._lock:
            return {
                name: TenantTotals(
                    t.spans.total.requests,
                    {unit: Tally(**vars(s.total)) for unit, s in t.models.items()},
                    t.rate_limited,
                    t.forbidden,
                )
                for name, t in self._tenants.items()
            }

    def report(self, tenants: Iterable[str] | None = None) -> dict[str, Any]:
        """The usage endpoints' body: per tenant (all, or those named) its requests and tokens over the
        last minute, hour and since start, and the same per model (requests: those that reached it)."""
        with self._lock:
            now = self.clock()
            names = list(self._tenants) if tenants is None else list(tenants)
            body: dict[str, Any] = {}
            for name in names:
                found = self._tenants.get(name, _Tenant())
                body[name] = {
                    **found.spans.as_json(now),
                    "rate_limited": found.rate_limited,
                    "forbidden": found.forbidden,
                    "models": {unit: spans.as_json(now) for unit, spans in found.models.items()},
                }
        return {"object": "usage", "started_at": int(self.started), "tenants": body}
