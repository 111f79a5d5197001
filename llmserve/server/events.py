"""`GET /v1/models/events`: the registry's model lifecycle events as server-sent events, for dashboards.

Each state change is `event: model_state` with a JSON `data` line: `{"model", "state", "previous",
"status", "time"}`, plus `memory_bytes` and `load_seconds` when loaded, `reason` when unloading, unloaded
or failed, and `error` when failed. While a model loads, `event: load_progress` lines carry `{"model",
"state": "loading", "stage", "fraction", "time"}`. The stream stays open until the client leaves or the
server stops; comments keep it alive.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from llmserve.config.keys import Tenant
from llmserve.models.registry import ModelRegistry
from llmserve.server.access import access_of
from llmserve.server.sse import event_source
from llmserve.server.state import registry_of


def visibility(registry: ModelRegistry, tenant: Tenant | None) -> Callable[[dict[str, Any]], bool]:
    """Whether `tenant` (None: anyone) may see a lifecycle event: one of a model its key may use."""

    def visible(event: dict[str, Any]) -> bool:
        model = str(event.get("model", ""))
        if tenant is None or tenant.may_use(model, model):
            return True
        status = registry.unit(model)  # None: an API id (a promotion)
        return status is not None and tenant.may_use(status.api_id, status.unit_id)

    return visible


async def model_events(request: Request) -> Response:
    """The events of the models the request's key may use."""
    registry = registry_of(request)
    visible = visibility(registry, access_of(request).tenant)

    async def events() -> AsyncIterator[dict[str, str]]:
        with registry.events.subscribe() as queue:
            yield {"comment": "subscribed"}
            while True:
                event = await queue.get()
                if visible(event):
                    yield frame(event)

    return event_source(events())


def frame(event: dict[str, Any]) -> dict[str, str]:
    """A lifecycle event as an SSE event (also on /v1/figures/events)."""
    kind = "load_progress" if "stage" in event else "model_state"
    return {"event": kind, "data": json.dumps(event, separators=(",", ":"))}
