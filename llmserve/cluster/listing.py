"""The cluster's /v1/models: each replica reports its own (its registry's model cards) to the
`Directory`, on every change of its models and every HEARTBEAT seconds; the ingress merges them. A
replica silent for STALE seconds is gone (Ray replaces a dead one, and the new one reports itself)."""

from __future__ import annotations

import time
from typing import Any

HEARTBEAT = 1.0
STALE = 5.0
# the best a replica can say of a model, first
STATUS_ORDER = ("loaded", "reloading", "unloaded", "internal_error")
Card = dict[str, Any]


class Directory:
    """What each replica last reported (a Ray Serve deployment of one replica; plain Python here)."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._reports: dict[str, tuple[float, list[Card]]] = {}

    def report(self, replica: str, cards: list[Card]) -> None:
        self._reports[replica] = (self._clock(), cards)

    def forget(self, replica: str) -> None:
        self._reports.pop(replica, None)

    def listings(self) -> dict[str, list[Card]]:
        now = self._clock()
        for replica in [r for r, (at, _) in self._reports.items() if now - at > STALE]:
            del self._reports[replica]
        return {replica: cards for replica, (_, cards) in sorted(self._reports.items())}


def rank(status: str) -> int:
    return STATUS_ORDER.index(status) if status in STATUS_ORDER else len(STATUS_ORDER)


def merge(listings: dict[str, list[Card]]) -> dict[str, Any]:
    """One /v1/models for the cluster: every id once, in the replicas' order; each card is the one of the
    replica that says the most of it (a loaded model's, with its memory and KV cache), with `replicas`:
    each replica's status for it."""
    best: dict[str, Card] = {}
    seen: dict[str, dict[str, str]] = {}
    for replica, cards in listings.items():
        for card in cards:
            model_id = card["id"]
            seen.setdefault(model_id, {})[replica] = card["status"]
            if model_id not in best or rank(card["status"]) < rank(best[model_id]["status"]):
                best[model_id] = card
    return {"object": "list", "data": [{**card, "replicas": seen[i]} for i, card in best.items()]}
