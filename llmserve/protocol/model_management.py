"""Wire types of model management: the model cards of /v1/models and the bodies of its actions (load,
unload, promote, status). Imports nothing heavy; requests parse with `protocol.base.parse_request`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from llmserve.protocol.base import RequestBody


class LoadProgressBody(BaseModel):
    stage: str  # waiting_for_memory, starting, tokenizer, converting_gguf, weights, saving_converted...
    fraction: float  # of the whole load done, 0 to 1


class KVCacheBody(BaseModel):
    """A loaded model's KV cache in tokens (docs/lifecycle.md: the memory model)."""

    budget_tokens: int
    reserved_tokens: int  # by the admitted requests: prompt + max_tokens each, as the batch holds them
    held_tokens: int  # token slots the caches hold now
    bytes_per_token: int
    source: Literal["kv_cache_memory", "derived"]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "llmserve"
    status: str
    engine: str | None = None  # what runs it: "transformers" or "llama.cpp"
    quantization: str | None = None  # "bitsandbytes-int8" / "-nf4" / "-fp4" with in_situ_quant
    memory_bytes: int | None = None  # the weights' footprint, measured at the last load
    expires_at: int | None = None  # unix time when the idle model unloads (keep_alive); None: not planned
    progress: LoadProgressBody | None = None  # while loading
    version: str | None = None  # with several versions: the one this id serves
    # What a request gets for the sampling fields it leaves out, and where each value comes from
    # ("config", "generation_config" or "api"); None for an Embedding model.
    sampling_defaults: dict[str, float | int | None] | None = None
    sampling_sources: dict[str, str] | None = None
    kv_cache: KVCacheBody | None = None  # while loaded (a model that generates text)


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ModelIdRequest(RequestBody):
    model_id: str


class PromoteRequest(RequestBody):
    model_id: str
    version: str


class PromoteResponse(BaseModel):
    model_id: str
    version: str
    previous_version: str
    status: Literal["loaded"] = "loaded"


class ModelStatusResponse(BaseModel):
    model_id: str
    status: str
    progress: LoadProgressBody | None = None  # sent only while loading
