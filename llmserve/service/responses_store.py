"""The Responses API's stored responses: a bounded in-memory store (at most `size` responses, each
for `ttl` seconds after it was stored; the oldest goes first). A restart forgets every one.

Each belongs to the tenant whose key created it (`owner`, None on a server without keys): another
tenant's id is a 404, exactly as an unknown one, so a key can neither read nor learn of another's."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmserve.errors import ResponseNotFound


@dataclass(frozen=True)
class StoredResponse:
    """A response as `GET /v1/responses/{id}` returns it, the request's own input items (what
    `input_items` lists) and the conversation it continued, input items included (what a response
    that names it as `previous_response_id` continues, with `response["output"]` after it)."""

    response: dict[str, Any]
    input_items: list[dict[str, Any]]
    conversation: list[dict[str, Any]]
    owner: str | None = None  # the tenant that created it; None: a server without keys

    def continued(self) -> list[dict[str, Any]]:
        return [*self.conversation, *self.response["output"]]


class ResponseStore:
    def __init__(self, size: int, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.size = size
        self.ttl = ttl
        self.clock = clock
        self._entries: OrderedDict[str, tuple[float, StoredResponse]] = OrderedDict()

    def __len__(self) -> int:
        self._expire()
        return len(self._entries)

    def put(self, stored: StoredResponse) -> None:
        if self.size <= 0:
            return
        self._expire()
        self._entries[stored.response["id"]] = (self.clock() + self.ttl, stored)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def get(self, response_id: str, owner: str | None, param: str | None = None) -> StoredResponse:
        """`owner`'s stored response; an unknown, deleted, expired or another tenant's id is a 404."""
        self._expire()
        entry = self._entries.get(response_id)
        if entry is None or entry[1].owner != owner:
            raise ResponseNotFound(response_id, param=param)
        return entry[1]

    def delete(self, response_id: str, owner: str | None) -> None:
        self.get(response_id, owner)
        del self._entries[response_id]

    def _expire(self) -> None:
        now = self.clock()
        while self._entries:
            key, (deadline, _) = next(iter(self._entries.items()))
            if deadline > now:
                break
            del self._entries[key]
