"""Wire types of `GET /v1/figures` and `GET /v1/figures/events`: every model version with its state,
queue, memory and what it has served, each device's memory with every model's share, and the room
policy (--max-loaded-models, --memory-budget, the next eviction candidate). The dashboard at /ui
renders them; scripts may read them too. Imports nothing heavy."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from llmserve.protocol.model_management import KVCacheBody, LoadProgressBody

State = Literal["unloaded", "loading", "loaded", "unloading", "failed"]


class Rates(BaseModel):
    """Over the interval since the previous `figures` event of the same stream."""

    seconds: float  # the interval
    tokens_per_second: float  # tokens decoded (all running sequences)
    requests: int  # requests that ended
    ttft_seconds: float | None  # mean time to first token of the requests that ended; None: none did


class ModelFigures(BaseModel):
    """One model version."""

    id: str  # the unit id: ID@VERSION for one of several versions, else the API id
    api_id: str
    version: str | None  # None: the model's only version
    default_version: bool  # what the API id names now (promote changes it)
    default_model: bool  # what `default` names
    kind: str  # Plain, GGUF, VisionPlain, Embedding
    engine: str  # what runs it: "transformers" or "llama.cpp"
    quantization: str | None
    state: State
    status: str  # the /v1/models status word (loaded, unloaded, reloading, internal_error)
    reason: str | None  # why it is unloading, unloaded or failed (docs/lifecycle.md)
    error: str | None  # why its last load, or the model, failed
    progress: LoadProgressBody | None  # while loading
    memory_bytes: int | None  # the weights, measured at the last load
    footprint: dict[str, int]  # bytes per device measured at the last load (weights + fixed reserve)
    load_seconds: float | None
    expires_at: float | None  # unix time when keep_alive unloads it while idle; None: not planned
    queue_depth: int
    running: int
    capacity: int  # max_batch_size + max_queue
    context_length: int | None  # while loaded
    kv_cache: KVCacheBody | None  # while loaded
    requests: int  # requests that reached it and ended, since the server started
    prompt_tokens: int
    completion_tokens: int  # of those requests
    decoded_tokens: int  # tokens decoded, counted as they come (running requests included)
    parked: bool  # unloaded, its weights parked in CPU memory (unload_mode: offload): wakes without a load
    ttft_seconds_total: float  # sum of the times to first token of `ttft_count` requests
    ttft_count: int
    rates: Rates | None = None  # on the stream, from its second event on


class DeviceShare(BaseModel):
    model: str  # unit id
    bytes: int
    estimated: bool  # still loading: the estimate from its files, not yet measured


class DeviceMemory(BaseModel):
    device: str  # cpu, cuda:N
    budget_bytes: int | None  # --memory-budget for this device; None: not limited
    used_bytes: int  # the models' shares plus the KV cache their requests reserve
    kv_reserved_bytes: int
    free_bytes: int | None  # budget left; without a budget, what the device has free; None: unknown
    models: list[DeviceShare]


class Figures(BaseModel):
    time: float  # unix seconds
    default_model: str  # the unit id `default` names
    max_loaded_models: int | None  # --max-loaded-models
    memory_budget: str | None  # --memory-budget as set, readable
    loaded_models: int
    resident: list[str]  # the versions holding a place in memory (loading ones included under limits)
    next_eviction: str | None  # the idle model that would give way first (least recently used)
    waiting_for_room: list[str]  # loads in line for room
    evictions: int  # idle models unloaded to make room, since start
    swaps: int  # busy models that yielded their turn, since start
    devices: list[DeviceMemory]
    models: list[ModelFigures]
    # who asks: the tenant of the request's key when the server has a keys file (--keys), else None; and
    # whether the key may manage models. A tenant sees only the models its key may use: the others' ids
    # become HIDDEN in `devices`, `resident`, `next_eviction`, `waiting_for_room` and `default_model`.
    tenant: str | None = None
    admin: bool = True


HIDDEN = "other models"  # in place of the models a key may not use
