"""Swap-aware scheduling: when models take turns in memory, a busy model serves the requests queued before
the waiting load's, takes no later ones, then yields; `min_resident` keeps each turn long enough that two
busy clients cause a bounded number of swaps, not one per request, and neither is starved."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from app_calls import ask, status
from scripted_app import serving

from llmserve.config.entries import ModelDefaults, parse_config


def in_background(client: Any, model: str, done: list[tuple[str, int, float]]) -> threading.Thread:
    def run() -> None:
        response = ask(client, model, max_tokens=4)
        done.append((model, response.status_code, time.monotonic()))

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_queued_requests_are_served_before_the_swap_and_later_ones_wait_their_turn() -> None:
    with serving("a", "b", step_delay=0.05, max_batch_size=1) as (client, factory, residency):
        done: list[tuple[str, int, float]] = []
        first = [in_background(client, "a", done)]
        while status(client, "a") != "loaded":
            time.sleep(0.01)
        first += [in_background(client, "a", done) for _ in range(2)]  # queued: the batch holds one
        time.sleep(0.05)
        b = in_background(client, "b", done)
        time.sleep(0.05)
        late = in_background(client, "a", done)  # after b asked: waits for a's next turn
        for thread in [*first, b, late]:
            thread.join(20)
        order = [model for model, _, _ in sorted(done, key=lambda d: d[2])]
        assert order == ["a", "a", "a", "b", "a"]
        assert all(code == 200 for _, code, _ in done)
        assert factory.loads == ["a", "b", "a"]
        # a yielded to b, then b (busy or idle by then) gave way to a's late request
        assert residency.swaps >= 1 and residency.swaps + residency.evictions == 2


def hammer(client: Any, model: str, until: float, log: list[tuple[str, int, float]]) -> None:
    while time.monotonic() < until:
        sent = time.monotonic()
        response = ask(client, model, max_tokens=2)
        log.append((model, response.status_code, time.monotonic() - sent))


def test_two_busy_clients_take_turns_of_min_resident_not_one_swap_per_request() -> None:
    with serving("a", "b", step_delay=0.02, min_resident=1.0, wait=30) as (client, factory, residency):
        log: list[tuple[str, int, float]] = []
        until = time.monotonic() + 4.0
        threads = [threading.Thread(target=hammer, args=(client, m, until, log)) for m in ("a", "b")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        served = {m: sum(1 for model, code, _ in log if model == m and code == 200) for m in ("a", "b")}
        assert all(code == 200 for _, code, _ in log)
        assert served["a"] >= 3 and served["b"] >= 3  # neither client is starved
        assert served["a"] + served["b"] >= 4 * (residency.swaps + 1)  # many requests per turn
        assert residency.swaps <= 6  # 4 s in turns of >= 1 s
        assert len(factory.loads) == residency.swaps + residency.evictions + 1


def test_min_resident_in_the_config() -> None:
    models = parse_config(
        {"a": {"Plain": {"model_id": "org/a"}, "min_resident": 2.5}, "b": {"Plain": {"model_id": "org/b"}}},
        base=Path("."),
        defaults=ModelDefaults(min_resident=7),
    )
    assert [m.min_resident for m in models] == [2.5, 7.0]
