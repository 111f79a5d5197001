"""`GET /v1/figures` and `GET /v1/figures/events`: the live figures a dashboard shows (the one at /ui).

`/v1/figures` is one `Figures` snapshot (protocol/figures.py): each model version rendered from its
`ModelStatus` with what it has served (server/metrics.py), each device's memory with every model's share
(models/residency.py's view, or the measured footprints when no limit is set), and the next eviction
candidate. `/v1/figures/events` is one SSE stream per dashboard: a `figures` event at once and then every
`interval` seconds (default 1, 0.2 to 10) with the rates over the interval, and every lifecycle event of
`/v1/models/events` as it happens (`model_state`, `load_progress`), followed shortly by fresh figures.
One stream carries both, so that a page holds one connection, not two (a browser allows six per origin).

Both answer for the request's key: a tenant sees only the models its key may use (as in `/v1/models`)
and their events; another model's share of a device's memory counts, under the name `HIDDEN`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from llmserve.config.sizes import Footprint
from llmserve.engine.memory import available_memory
from llmserve.errors import InvalidRequest
from llmserve.models.registry import ModelRegistry
from llmserve.models.residency import ResidencyView
from llmserve.models.status import ModelState, ModelStatus
from llmserve.protocol.figures import HIDDEN, DeviceMemory, DeviceShare, Figures, ModelFigures, Rates
from llmserve.protocol.model_management import KVCacheBody, LoadProgressBody
from llmserve.server.access import OPEN, Access, access_of
from llmserve.server.admin import keys_of
from llmserve.server.events import frame, visibility
from llmserve.server.metrics import Metrics, Served
from llmserve.server.sse import event_source
from llmserve.server.state import registry_of

Available = Callable[[str], int | None]  # bytes free on a device (engine/memory.py)
AFTER_EVENT = 0.1  # seconds from a lifecycle event to the figures that follow it
INTERVALS = (0.2, 10.0)


def model_figures(status: ModelStatus, registry: ModelRegistry, served: Served, default: str) -> ModelFigures:
    """`default`: the unit id that `default` names."""
    default_unit = registry.default_unit(status.api_id)
    mode, progress = status.quant_mode, status.progress
    return ModelFigures(
        id=status.unit_id,
        api_id=status.api_id,
        version=status.version,
        default_version=default_unit is None or default_unit == status.unit_id,
        default_model=default == status.unit_id,
        kind=status.kind,
        engine=status.engine,
        quantization=None if mode is None else f"bitsandbytes-{mode}",
        state=status.state.value,
        status=status.api_status,
        reason=status.reason,
        error=status.last_error,
        progress=None if progress is None else LoadProgressBody.model_validate(progress.as_json()),
        memory_bytes=status.memory_bytes,
        footprint=dict(status.footprint),
        load_seconds=status.load_seconds,
        expires_at=status.expires_at,
        queue_depth=status.queue_depth,
        running=status.running,
        capacity=status.capacity,
        context_length=status.context_length,
        kv_cache=None if status.kv is None else KVCacheBody.model_validate(status.kv, from_attributes=True),
        requests=served.requests,
        prompt_tokens=served.prompt_tokens,
        completion_tokens=served.completion_tokens,
        decoded_tokens=status.tokens_generated,
        parked=status.parked,
        ttft_seconds_total=served.ttft_total,
        ttft_count=served.ttft_count,
    )


def _shares(statuses: list[ModelStatus], view: ResidencyView | None) -> dict[str, list[DeviceShare]]:
    """Each device's models and their bytes: what residency holds for each (the estimate while one
    loads), or without limits the measured footprint of each model in memory."""
    by_unit = {s.unit_id: s for s in statuses}
    held: dict[str, Footprint] = {}
    if view is not None:
        held = {unit: dict(footprint) for unit, footprint in view.held.items()}
    else:
        held = {s.unit_id: dict(s.footprint) for s in statuses if s.in_memory}
    shares: dict[str, list[DeviceShare]] = {}
    for unit, footprint in held.items():
        status = by_unit.get(unit)
        estimated = status is None or not status.in_memory
        for device, size in footprint.items():
            shares.setdefault(device, []).append(DeviceShare(model=unit, bytes=size, estimated=estimated))
    return shares


def devices(
    statuses: list[ModelStatus],
    view: ResidencyView | None,
    kv_reserved: Callable[[str], int],
    free: Available,
) -> list[DeviceMemory]:
    """Every device a model holds memory on or a budget names, the CPU always, in name order."""
    shares = _shares(statuses, view)
    budget = None if view is None else view.budget
    named = [] if budget is None else [d for d in budget.devices if d != "cuda"]
    out = []
    for device in sorted({"cpu", *shares, *named}):
        models = sorted(shares.get(device, []), key=lambda share: -share.bytes)
        kv = kv_reserved(device)
        used = sum(share.bytes for share in models) + kv
        limit = None if budget is None else budget.limit(device)
        left = free(device) if limit is None else max(0, limit - used)
        out.append(
            DeviceMemory(
                device=device,
                budget_bytes=limit,
                used_bytes=used,
                kv_reserved_bytes=kv,
                free_bytes=left,
                models=models,
            )
        )
    return out


def next_eviction(statuses: list[ModelStatus], view: ResidencyView | None) -> str | None:
    """The model residency would ask first: the least recently used one that is idle and evictable."""
    if view is None:
        return None
    idle = {s.unit_id for s in statuses if s.state is ModelState.LOADED and s.in_flight == 0}
    return next((unit for unit in view.eviction_order if unit in idle), None)


def figures(
    registry: ModelRegistry, metrics: Metrics, free: Available = available_memory, access: Access = OPEN
) -> Figures:
    """What `access` may see: every model for a key without a model scope."""
    statuses = registry.statuses()
    residency = registry.residency
    view = None if residency is None else residency.view()
    budget = None if view is None else view.budget
    default = registry.status(None).unit_id
    shown = [s for s in statuses if access.may_use(s)]
    out = Figures(
        time=time.time(),
        default_model=default,
        max_loaded_models=None if view is None else view.max_loaded,
        memory_budget=None if budget is None else budget.describe(),
        loaded_models=sum(s.in_memory for s in statuses),
        resident=[s.unit_id for s in statuses if s.in_memory] if view is None else list(view.held),
        next_eviction=next_eviction(statuses, view),
        waiting_for_room=[] if view is None else list(view.waiting),
        evictions=0 if view is None else view.evictions,
        swaps=0 if view is None else view.swaps,
        devices=devices(statuses, view, registry.kv.reserved, free),
        models=[model_figures(s, registry, metrics.served.get(s.unit_id, Served()), default) for s in shown],
        admin=access.admin,
    )
    if access.tenant is not None:
        _hide(out, {s.unit_id for s in shown})
    return out


def _hide(out: Figures, visible: set[str]) -> None:
    """Puts `HIDDEN` in place of every model outside `visible`, one share per device for all of them."""

    def name(unit: str) -> str:
        return unit if unit in visible else HIDDEN

    out.default_model = name(out.default_model)
    out.resident = [name(unit) for unit in out.resident]
    out.next_eviction = None if out.next_eviction is None else name(out.next_eviction)
    out.waiting_for_room = [name(unit) for unit in out.waiting_for_room]
    for device in out.devices:
        shown = [share for share in device.models if share.model in visible]
        others = [share for share in device.models if share.model not in visible]
        if others:
            hidden = DeviceShare(
                model=HIDDEN,
                bytes=sum(share.bytes for share in others),
                estimated=all(share.estimated for share in others),
            )
            shown = sorted([*shown, hidden], key=lambda share: -share.bytes)
        device.models = shown


def with_rates(previous: Figures | None, current: Figures) -> Figures:
    """`current` with each model's rates over the time since `previous` (same stream)."""
    if previous is None:
        return current
    seconds = max(current.time - previous.time, 1e-6)
    before = {m.id: m for m in previous.models}
    for model in current.models:
        old = before.get(model.id)
        if old is None:
            continue
        count = model.ttft_count - old.ttft_count
        model.rates = Rates(
            seconds=round(seconds, 3),
            tokens_per_second=round(max(0, model.decoded_tokens - old.decoded_tokens) / seconds, 2),
            requests=model.requests - old.requests,
            ttft_seconds=None if count <= 0 else (model.ttft_seconds_total - old.ttft_seconds_total) / count,
        )
    return current


def metrics_of(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


def snapshot(request: Request) -> Figures:
    """The figures for the request's key; `tenant` set when the server has a keys file."""
    access = access_of(request)
    out = figures(registry_of(request), metrics_of(request), access=access)
    if keys_of(request).keys is not None:
        out.tenant = access.name
    return out


async def figures_json(request: Request) -> Response:
    return JSONResponse(snapshot(request).model_dump())


def _interval(request: Request) -> float:
    text = request.query_params.get("interval", "1")
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    low, high = INTERVALS
    if not low <= value <= high:
        raise InvalidRequest(f"interval must be a number of seconds from {low} to {high}", param="interval")
    return value


async def figures_events(request: Request) -> Response:
    registry, interval = registry_of(request), _interval(request)
    visible = visibility(registry, access_of(request).tenant)

    def event(current: Figures) -> dict[str, str]:
        return {"event": "figures", "data": current.model_dump_json()}

    async def events() -> AsyncIterator[dict[str, str]]:
        with registry.events.subscribe() as queue:
            previous = snapshot(request)
            yield event(previous)
            due = time.monotonic() + interval
            soon: float | None = None  # figures promised after a lifecycle event
            while True:
                wake = due if soon is None else min(due, soon)
                try:
                    lifecycle = await asyncio.wait_for(queue.get(), max(0.0, wake - time.monotonic()))
                except asyncio.TimeoutError:
                    if time.monotonic() >= due:  # a regular tick: the rates cover a whole interval
                        previous = with_rates(previous, snapshot(request))
                        yield event(previous)
                        due, soon = time.monotonic() + interval, None
                    else:  # an early one: the state right after the event, without rates
                        yield event(snapshot(request))
                        soon = None
                    continue
                if visible(lifecycle):
                    yield frame(lifecycle)
                    soon = soon or time.monotonic() + AFTER_EVENT

    return event_source(events())


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/figures", figures_json, methods=["GET"]),
        Route("/v1/figures/events", figures_events, methods=["GET"]),
    ]
