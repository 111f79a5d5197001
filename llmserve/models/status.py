"""ModelStatus: one model version as everything above models/ sees it.

A frozen snapshot that the model's worker takes under its lock (`ModelWorker.status()`), so its fields
agree with each other. Model cards, `/v1/models/status`, the V2 repository index, the lifecycle events,
`/metrics` and the terminal chat read this, never the worker.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal

from llmserve.config.options import QuantMode
from llmserve.config.sampling import SamplingDefaults
from llmserve.engine.progress import LoadProgress


class ModelState(enum.Enum):
    UNLOADED = "unloaded"
    LOADING = "loading"
    LOADED = "loaded"
    UNLOADING = "unloading"
    FAILED = "failed"


# Why a model left memory, or did not get there: the `reason` of a lifecycle event and the `reason`
# label of llmserve_model_unloads.
UnloadReason = Literal[
    "unload",  # asked for (/v1/models/unload, the V2 unload, a replaced version)
    "keep_alive",  # idle for its keep_alive
    "evicted",  # idle, unloaded to make room for another model
    "swapped",  # busy, yielded its turn in memory to another model
    "no_room",  # found no room within --load-wait (it never loaded)
    "load_failed",  # its engine failed to load
    "failed",  # its model code failed while serving
    "shutdown",  # the server stops
]

# The status words of the model management API (a card's `status`, `/v1/models/status`; the words of
# mistral.rs's server, which llmserve's API follows); an unknown id answers `not_found`
# (errors.StatusOfUnknownModel).
ApiStatus = Literal["loaded", "unloaded", "reloading", "internal_error"]
# A model that is unloading still serves its running requests, so it reports `loaded` until the memory
# is freed.
API_STATUS: dict[ModelState, ApiStatus] = {
    ModelState.LOADED: "loaded",
    ModelState.UNLOADING: "loaded",
    ModelState.UNLOADED: "unloaded",
    ModelState.LOADING: "reloading",
    ModelState.FAILED: "internal_error",
}


@dataclass(frozen=True)
class KVUsage:
    """A loaded model's KV cache in tokens: its budget, what its admitted requests reserve (prompt +
    max_tokens each, rows x the longest in a padded batch), and the token slots its caches hold now."""

    budget_tokens: int
    reserved_tokens: int
    held_tokens: int
    bytes_per_token: int
    source: str  # "kv_cache_memory" (set) or "derived" (from the free memory at load)

    @property
    def utilisation(self) -> float:
        """Reserved over budget, 0 to 1."""
        return self.reserved_tokens / self.budget_tokens if self.budget_tokens else 0.0


@dataclass(frozen=True)
class ModelStatus:
    """One model version at one moment."""

    api_id: str  # what clients name the model
    unit_id: str  # this version: `ID@VERSION` when the model has several, else the API id
    version: str | None  # the entry's version; None: the model's only one
    version_label: str  # the version as the V2 API names it ("1" when the entry has none)
    kind: str  # Plain, GGUF, VisionPlain, Embedding
    engine: str  # what runs it: "transformers" or "llama.cpp"
    quant_mode: QuantMode | None  # in_situ_quant
    state: ModelState
    reason: UnloadReason | None  # why it is unloading, unloaded or failed; None before its first load
    last_error: str | None  # why the last load, or the model, failed
    progress: LoadProgress | None  # the latest report while it loads, else None
    memory_bytes: int | None  # the weights' footprint measured at the last load (kept after an unload)
    load_seconds: float | None  # how long the last load took
    loaded_at: float  # time.monotonic() when its current (or last) load began; 0.0: never loaded
    expires_at: float | None  # time.time() when keep_alive will unload it while idle; None: not planned
    sampling: SamplingDefaults  # what a request gets for the sampling fields it leaves out
    queue_depth: int  # generations accepted and waiting to start
    running: int  # sequences decoding
    capacity: int  # generations it accepts at once: max_batch_size + max_queue
    kv: KVUsage | None = None  # while loaded, for an engine with a KV cache
    context_length: int | None = None  # tokens the loaded model reads at most (prompt + answer)
    chat_template: str | None = None  # the loaded model's chat template (Jinja), "" when it has none
    # bytes per device ("cpu", "cuda:0") measured at the last load, weights and KV reserve (kept after an
    # unload, like memory_bytes), sorted by device
    footprint: tuple[tuple[str, int], ...] = ()
    tokens_generated: int = 0  # tokens this version has decoded since the server started
    parked: bool = False  # unloaded with its weights parked in CPU memory (unload_mode: offload)

    @property
    def api_status(self) -> ApiStatus:
        return API_STATUS[self.state]

    @property
    def in_memory(self) -> bool:
        """Its weights are in memory (an unloading model still serves its running requests)."""
        return self.state in (ModelState.LOADED, ModelState.UNLOADING)

    @property
    def in_flight(self) -> int:
        """Generations running or waiting."""
        return self.running + self.queue_depth
