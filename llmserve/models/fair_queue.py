"""The waiting generations of one model, started by weighted fair queuing across tenants.

Each tenant is a flow: its own line, in arrival order, and a virtual time, the tokens it has had on this
model (a prompt when its request starts, then each generated token) divided by its `weight`. The next
request to start is the head of a flow of the highest `priority` class waiting, and within the class the
flow with the least virtual time (ties: the flow that started a request least recently, then the older
head). So over a busy stretch each tenant's tokens are in proportion to its weight, and a tenant's one
request waits behind another's hundreds for at most the requests already running.

A flow that begins to wait again is lifted to the least virtual time of the flows waiting in its class
(or, when none waits, to where the class stood at its last start): time spent idle banks no credit. A
server without keys has one flow, and the order is arrival order, as before. Runs on the worker's thread;
only `Usage` (thread-safe) is shared.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from llmserve.config.keys import PRIORITIES, Tenant
from llmserve.models.jobs import Generate
from llmserve.models.residency import Claim
from llmserve.models.usage import ANONYMOUS, Usage

NORMAL = PRIORITIES.index("normal")  # the class of a request without a tenant


def name_of(tenant: Tenant | None) -> str:
    return ANONYMOUS if tenant is None else tenant.name


def rank_of(tenant: Tenant | None) -> int:
    return NORMAL if tenant is None else tenant.rank


@dataclass
class _Flow:
    rank: int
    jobs: deque[Generate] = field(default_factory=deque)
    vtime: float = 0.0  # tokens had here / weight
    started: int = -1  # the number of its last start (-1: never)


class FairQueue:
    def __init__(
        self, unit_id: str = "", usage: Usage | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.unit_id = unit_id
        self._usage = usage
        self._clock = clock
        self._flows: dict[str, _Flow] = {}
        self._floor: dict[int, float] = {}  # per class: the virtual time of its last start
        self._starts = 0
        self._count = 0
        # each running request's tokens charged, by id() of its stream (the job the worker runs may be a
        # copy with the model's defaults filled in; the stream is the same)
        self._generated: dict[int, int] = {}

    # -- the line --
    def append(self, job: Generate) -> None:
        name, rank = name_of(job.tenant), rank_of(job.tenant)
        flow = self._flows.get(name)
        if flow is None:
            flow = self._flows[name] = _Flow(rank)
        if not flow.jobs:
            flow.rank = rank  # a reloaded keys file may have moved it
            flow.vtime = max(flow.vtime, self._level(rank))
        flow.jobs.append(job)
        self._count += 1

    def _level(self, rank: int) -> float:
        waiting = [f.vtime for f in self._flows.values() if f.jobs and f.rank == rank]
        return min(waiting) if waiting else self._floor.get(rank, 0.0)

    def first(self, before: float | None = None) -> Generate | None:
        """The request to start next; `before`: only among those queued before that time (a model
        yielding its turn serves those, then unloads)."""
        best: tuple[int, float, int, float] | None = None
        chosen: Generate | None = None
        for flow in self._flows.values():
            if not flow.jobs:
                continue
            head = flow.jobs[0]
            if before is not None and head.queued_at >= before:
                continue
            key = (flow.rank, flow.vtime, flow.started, head.queued_at)
            if best is None or key < best:
                best, chosen = key, head
        return chosen

    def oldest(self) -> float | None:
        """When the request waiting longest was queued."""
        heads = [f.jobs[0].queued_at for f in self._flows.values() if f.jobs]
        return min(heads) if heads else None

    def claim(self) -> Claim:
        job = self.first()
        if job is None or job.tenant is None:
            return Claim()
        return Claim(job.tenant.rank, job.tenant.name, job.tenant.weight)

    def remove(self, job: Generate) -> None:
        """`job` leaves the line without starting (it failed, or its client left)."""
        flow = self._flows.get(name_of(job.tenant))
        at = next((i for i, queued in enumerate(flow.jobs) if queued is job), None) if flow else None
        if flow is not None and at is not None:
            del flow.jobs[at]
            self._count -= 1

    def drop(self, gone: Callable[[Generate], bool]) -> list[Generate]:
        """Takes out every waiting request for which `gone` is true; returns them."""
        out = [job for job in self if gone(job)]
        for job in out:
            self.remove(job)
        return out

    def clear(self) -> None:
        for flow in self._flows.values():
            flow.jobs.clear()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0

    def __iter__(self) -> Iterator[Generate]:
        """Every waiting request, in arrival order."""
        jobs = [job for flow in self._flows.values() for job in flow.jobs]
        return iter(sorted(jobs, key=lambda job: job.queued_at))

    # -- service --
    def started(self, job: Generate, prompt_tokens: int) -> None:
        """`job` starts: it leaves the line and its flow is charged its prompt (then `progress`, `ended`)."""
        name = name_of(job.tenant)
        flow = self._flows[name]
        self.remove(job)
        self._floor[flow.rank] = flow.vtime
        self._starts += 1
        flow.started = self._starts
        if self._usage is not None:
            self._usage.waited(name, max(0.0, self._clock() - job.queued_at))
        self._generated[id(job.stream)] = 0
        self.charge([(job, prompt_tokens, 0)])

    def progress(self, counts: Iterable[tuple[Generate, int]]) -> None:
        """(running request, the tokens it has generated so far): what is new is charged."""
        charges = []
        for job, generated in counts:
            before = self._generated.get(id(job.stream))
            if before is not None and generated > before:
                self._generated[id(job.stream)] = generated
                charges.append((job, 0, generated - before))
        self.charge(charges)

    def ended(self, job: Generate, generated: int | None = None) -> None:
        """A started request ends (`generated`: all its tokens, when it finished): the rest is charged
        before its client hears the end, so that the usage it then reads holds all of it."""
        if generated is not None:
            self.progress([(job, generated)])
        self._generated.pop(id(job.stream), None)

    def charge(self, counts: list[tuple[Generate, int, int]]) -> None:
        """(request, prompt tokens, generated tokens): its tenant's virtual time and usage go up."""
        for job, prompt, completion in counts:
            flow = self._flows.get(name_of(job.tenant))
            if flow is not None:
                flow.vtime += (prompt + completion) / (1.0 if job.tenant is None else job.tenant.weight)
        if self._usage is not None and counts:
            self._usage.tokens((name_of(j.tenant), self.unit_id, p, c) for j, p, c in counts)


class Holders:
    """A model's accepted generations (running or waiting) per tenant, kept under its worker's lock. A
    model at capacity still takes one request of a tenant that holds none there: another key's backlog
    cannot shut a key out (at most one request per tenant beyond `max_batch_size + max_queue`)."""

    def __init__(self) -> None:
        self._count: Counter[str] = Counter()

    def hold(self, job: Generate) -> bool:
        """Whether the tenant of `job` holds a generation of the model already."""
        return self._count[name_of(job.tenant)] > 0

    def add(self, job: Generate) -> None:
        self._count[name_of(job.tenant)] += 1

    def remove(self, job: Generate) -> None:
        name = name_of(job.tenant)
        self._count[name] -= 1
        if self._count[name] <= 0:
            del self._count[name]
