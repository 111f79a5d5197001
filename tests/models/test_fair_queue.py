"""llmserve/models/fair_queue.py: which waiting request of a model starts next, exactly, across tenants
(weights, priority classes, newcomers, idle tenants) and within one (arrival order); and what it counts.
Across models: which model waiting for memory gets the next turn (models/residency.py)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from llmserve.config.keys import Priority, Tenant
from llmserve.engine.base import GenerationParams
from llmserve.models.fair_queue import FairQueue
from llmserve.models.jobs import Generate
from llmserve.models.residency import Claim, Residency
from llmserve.models.usage import ANONYMOUS, Usage

A, B, C = Tenant("a"), Tenant("b"), Tenant("c")


def job(tenant: Tenant | None, at: float, label: str = "") -> Generate:
    """A waiting request; its `prompt` carries a label for the assertions (the queue never reads it), its
    stream is only an identity (the queue keeps a running request's count by its stream)."""
    return Generate((), GenerationParams(), object(), queued_at=at, prompt=label, tenant=tenant)  # type: ignore[arg-type]


def labels(jobs: list[Generate]) -> list[str]:
    return [str(j.prompt) for j in jobs]


@dataclass
class Model:
    """A model that runs `batch` requests at once, each `prompt` tokens then `output` generated tokens,
    one per step: the worker's loop around the queue, without threads."""

    queue: FairQueue
    batch: int = 2
    prompt: int = 10
    output: int = 5
    running: dict[int, tuple[Generate, int]] = field(default_factory=dict)
    finished: list[Generate] = field(default_factory=list)
    started: list[Generate] = field(default_factory=list)

    def admit(self) -> None:
        while len(self.running) < self.batch and (nxt := self.queue.first()) is not None:
            self.queue.started(nxt, self.prompt)
            self.started.append(nxt)
            self.running[id(nxt)] = (nxt, 0)

    def step(self) -> None:
        self.admit()
        for key, (j, made) in list(self.running.items()):
            if made + 1 == self.output:
                del self.running[key]
                self.queue.ended(j, made + 1)
                self.finished.append(j)
            else:
                self.running[key] = (j, made + 1)
        self.queue.progress((j, made) for j, made in self.running.values())

    def run(self, steps: int = 10_000) -> None:
        for _ in range(steps):
            if not self.queue and not self.running:
                return
            self.step()


def test_without_tenants_the_order_is_arrival_order() -> None:
    queue = FairQueue()
    jobs = [job(None, t, str(t)) for t in range(5)]
    for j in jobs:
        queue.append(j)
    model = Model(queue)
    model.run()
    assert labels(model.started) == ["0", "1", "2", "3", "4"]
    assert len(queue) == 0 and not queue


def test_a_newcomer_starts_at_the_next_admission_not_after_a_backlog() -> None:
    """Key A queues 24, then key B sends one: B starts as soon as a slot frees, and finishes before at
    least 18 of A's (here: before all but the 2-3 already running or just freed)."""
    queue = FairQueue()
    model = Model(queue)
    for i in range(24):
        queue.append(job(A, i, f"a{i}"))
    model.step()  # a0, a1 running
    queue.append(job(B, 100, "b"))
    model.run()
    order = labels(model.finished)
    assert order.index("b") <= 3, order
    assert labels(model.started)[:3] == ["a0", "a1", "b"]
    assert [x for x in order if x != "b"] == [f"a{i}" for i in range(24)]  # A's own order kept


def test_weights_split_the_tokens_three_to_one() -> None:
    heavy, light = Tenant("heavy", weight=3), Tenant("light", weight=1)
    queue = FairQueue()
    for i in range(200):
        queue.append(job(heavy, i, "heavy"))
        queue.append(job(light, i + 0.5, "light"))
    model = Model(queue)
    for _ in range(600):
        model.step()
    done = Counter(labels(model.finished))
    assert sum(done.values()) >= 150
    assert 2.8 <= done["heavy"] / done["light"] <= 3.2, done


def test_weights_count_tokens_not_requests() -> None:
    """A tenant whose requests are twice as long gets half as many of them started."""
    queue = FairQueue()
    model = Model(queue, batch=1, prompt=0, output=1)
    for i in range(100):
        queue.append(job(A, i, "a"))
        queue.append(job(B, i + 0.5, "b"))
    for _ in range(60):
        nxt = queue.first()
        assert nxt is not None
        queue.started(nxt, 2 if nxt.tenant is A else 1)
        model.started.append(nxt)
    started = Counter(labels(model.started))
    assert (started["a"], started["b"]) == (20, 40)


def test_priority_classes_are_served_strictly_in_order() -> None:
    def tenant(name: str, priority: Priority) -> Tenant:
        return Tenant(name, priority=priority)

    queue = FairQueue()
    for i, (name, priority) in enumerate([("l", "low"), ("n", "normal"), ("h", "high")] * 3):
        queue.append(job(tenant(name, priority), i, name))
    model = Model(queue, batch=1)
    model.run()
    assert labels(model.started) == ["h"] * 3 + ["n"] * 3 + ["l"] * 3


def test_an_idle_tenant_banks_no_credit() -> None:
    """A served alone for a long time; B arrives fresh: they alternate, B does not take ten turns."""
    queue = FairQueue()
    model = Model(queue, batch=1)
    for i in range(10):
        queue.append(job(A, i, "a"))
    model.run()
    for i in range(6):
        queue.append(job(A, 100 + i, "a"))
        queue.append(job(B, 100.5 + i, "b"))
    model.run()
    assert "".join(labels(model.started)[10:]) in ("babababababa", "abababababab")


def test_yielding_serves_only_what_was_queued_before() -> None:
    queue = FairQueue()
    queue.append(job(A, 1, "a-early"))
    queue.append(job(B, 5, "b-late"))
    queue.append(job(C, 2, "c-early"))
    first = queue.first(before=3)
    assert first is not None and first.prompt == "a-early"
    queue.started(first, 1)
    nxt = queue.first(before=3)
    assert nxt is not None and nxt.prompt == "c-early"
    queue.started(nxt, 1)
    assert queue.first(before=3) is None
    assert queue.oldest() == 5


def test_removing_dropping_and_iterating() -> None:
    queue = FairQueue()
    jobs = [job(A, 3, "a3"), job(B, 1, "b1"), job(A, 2, "a2"), job(None, 0, "n0")]
    for j in jobs:
        queue.append(j)
    assert labels(list(queue)) == ["n0", "b1", "a2", "a3"]  # arrival order
    assert queue.oldest() == 0
    assert labels(queue.drop(lambda j: j.prompt in ("b1", "a3"))) == ["b1", "a3"]
    queue.remove(jobs[0])  # gone already: nothing happens
    assert len(queue) == 2 and labels(list(queue)) == ["n0", "a2"]
    queue.clear()
    assert len(queue) == 0 and queue.first() is None and queue.oldest() is None


def test_the_claim_is_the_next_requests_tenant() -> None:
    queue = FairQueue()
    assert queue.claim() == Claim()
    queue.append(job(Tenant("x", weight=2, priority="high"), 1))
    assert queue.claim() == Claim(0, "x", 2.0)


def test_usage_counts_prompts_tokens_and_waits() -> None:
    now = [10.0]
    usage = Usage(clock=lambda: now[0])
    waits: list[tuple[str, float]] = []
    usage.on_wait.append(lambda tenant, seconds: waits.append((tenant, seconds)))
    queue = FairQueue("m@2", usage, clock=lambda: now[0])
    a, n = job(A, 4.0), job(None, 7.0)
    queue.append(a)
    queue.append(n)
    queue.started(a, 12)
    queue.started(n, 3)
    queue.progress([(a, 1), (n, 0)])
    queue.progress([(a, 2), (n, 2)])
    queue.ended(a, 2)
    queue.ended(n, None)  # failed or cancelled: what was counted stays
    queue.progress([(a, 5)])  # no longer running: nothing
    assert waits == [("a", 6.0), (ANONYMOUS, 3.0)]
    report = usage.report()["tenants"]
    assert report["a"]["models"]["m@2"]["since_start"] == {
        "requests": 0,
        "prompt_tokens": 12,
        "completion_tokens": 2,
        "total_tokens": 14,
    }
    assert report[ANONYMOUS]["last_minute"]["total_tokens"] == 5
    assert usage.recent_tokens("a") == 14


class Held:
    """A model in memory (or waiting to be) that never gives way: loads wait until it is released."""

    def __init__(self, unit_id: str) -> None:
        self.unit_id = unit_id
        self.last_active = self.loaded_at = time.monotonic()
        self.min_resident = 1e9
        self.pinned = self.closing = False

    def evict(self, timeout: float) -> bool:
        return False

    def yield_turn(self, since: float | None) -> None:
        pass


def turns(claims: list[tuple[str, Claim]], served: dict[str, float]) -> list[str]:
    """The order in which loaders waiting for the one place get it (they arrive in the order given)."""
    residency = Residency(1, wait=10)
    residency.served = lambda tenant: served.get(tenant, 0.0)
    assert residency.admit(Held("busy"), {}, 0.0)
    order: list[str] = []

    def load(name: str, claim: Claim) -> None:
        assert residency.admit(Held(name), {}, 0.0, claim)
        order.append(name)
        residency.release(name)

    threads = []
    for name, claim in claims:
        threads.append(threading.Thread(target=load, args=(name, claim)))
        threads[-1].start()
        while name not in [entry[0] for entry in residency._line]:
            time.sleep(0.001)
    residency.release("busy")
    for thread in threads:
        thread.join(10)
    return order


def test_a_swap_turn_goes_to_the_least_served_tenant_not_the_first_in_line() -> None:
    anyone = Claim()
    assert turns([("y", anyone), ("z", anyone), ("w", anyone)], {}) == ["y", "z", "w"]  # no keys: arrival
    busy, idle = Claim(1, "busy", 1.0), Claim(1, "idle", 1.0)
    assert turns([("y", busy), ("z", idle)], {"busy": 1000, "idle": 10}) == ["z", "y"]
    big, small = Claim(1, "big", 3.0), Claim(1, "small", 1.0)  # 300 / 3 < 150 / 1
    assert turns([("y", small), ("z", big)], {"big": 300, "small": 150}) == ["z", "y"]
    urgent = Claim(0, "busy", 1.0)
    assert turns([("y", idle), ("z", urgent)], {"busy": 1000}) == ["z", "y"]  # priority first
