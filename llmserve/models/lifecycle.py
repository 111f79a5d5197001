"""One model's engine in memory: getting it in (room, load with progress, measurement) and out again
(free the memory for real, or park the weights in CPU memory with `unload_mode: offload`).

Runs on the model's worker thread only. Its figures (`progress`, `memory_bytes`, `last_error`...) are read
by the worker's `status()` from other threads: each is replaced by a single assignment, before the state
change that publishes it.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable

from llmserve.config.entries import ModelConfig
from llmserve.config.sizes import Footprint, format_size
from llmserve.engine.base import Engine, EngineFactory, KVCacheSource, KVPoolSource
from llmserve.engine.footprint import Estimate, add
from llmserve.engine.memory import available_memory, last_load_growth, trim_process_memory
from llmserve.engine.progress import LoadProgress, report, reporting
from llmserve.errors import LLMServeError, ModelLoadFailed, ModelTooLarge
from llmserve.models.kv_budget import KVBudget, budget_tokens, derived_memory
from llmserve.models.residency import NO_CLAIM, Claim, Residency, Resident
from llmserve.models.status import ModelState, UnloadReason

log = logging.getLogger(__name__)
# an unload that may park the weights (unload_mode: offload): not on failure or shutdown
_PARKABLE: frozenset[UnloadReason] = frozenset({"unload", "keep_alive", "evicted", "swapped"})
Estimator = Callable[[ModelConfig], Estimate | None]


def held(tensors: Footprint, growth: int | None) -> Footprint:
    """What a loaded model holds per device: its tensors' bytes (exact on CUDA, where the allocator holds
    nothing else for it); on the CPU no less than the process's measured growth over the load (`growth`,
    None when the load was not metered), which counts what tensor bytes miss: the pages of a memory map
    kept open, the tokenizer, the allocator's slack. Tensors read from a memory map are in the RSS only
    once touched, by the first forward pass, so their bytes stay the floor."""
    if growth is None or "cpu" not in tensors:
        return dict(tensors)
    return {**tensors, "cpu": max(tensors["cpu"], growth)}


class Slot:
    """Holds the engine of one model, and the figures of its last load."""

    def __init__(
        self,
        config: ModelConfig,
        factory: EngineFactory,
        residency: Residency | None,
        estimator: Estimator | None,
        become: Callable[[ModelState, UnloadReason | None], None],
        on_progress: Callable[[LoadProgress], None],
    ) -> None:
        self.config = config
        self._factory = factory
        self._residency = residency
        self._estimator = estimator
        self._become = become
        self._on_progress = on_progress
        self.engine: Engine | None = None
        self.parked: Engine | None = None  # offloaded to CPU memory: wakes without a load
        self.memory_bytes: int | None = None  # measured after each load
        self.footprint: Footprint | None = None  # bytes per device, measured at the last load
        self.progress: LoadProgress | None = None  # while loading
        self.loaded_at = 0.0
        self.load_seconds: float | None = None
        self.last_error: str | None = None  # why the last load or the model failed
        self._estimate: Estimate | None = None
        self._estimated = False
        self.kv: KVBudget | None = None  # the loaded engine's KV budget (None: it holds no KV cache)

    def estimate(self) -> Estimate | None:
        """The footprint from the model's files, once (only when a memory budget asks for it)."""
        if self._estimator is None or self._residency is None or self._residency.budget is None:
            return None
        if not self._estimated:
            try:
                self._estimate = self._estimator(self.config)
            except Exception as exc:  # unreadable headers: admitted on the count, measured after the load
                log.warning(
                    "cannot estimate the size of %s: %s: %s", self.config.api_id, type(exc).__name__, exc
                )
            self._estimated = True
        return self._estimate

    def need(self) -> Footprint:
        if self.footprint is not None:
            return self.footprint
        estimate = self.estimate()
        return {} if estimate is None else estimate.total

    def too_big(self, *, compute: bool = True) -> ModelTooLarge | None:
        """The error when the model cannot fit the budget; `compute=False`: only from figures known
        already (no file is read: callable from the event loop)."""
        if self._residency is None or self._residency.budget is None:
            return None
        if not compute and self.footprint is None and not self._estimated:
            return None
        return self._residency.too_big(self.config.unit_id, self.need())

    def _report(self, progress: LoadProgress) -> None:
        self.progress = progress
        self._on_progress(progress)

    def load(self, owner: Resident, since: float, claim: Claim = NO_CLAIM) -> Engine:
        """Takes room, then loads (or wakes the parked engine). Raises the error of the waiting requests.
        `since`: when its oldest waiting request came; `claim`: whom its next request is for."""
        self._become(ModelState.LOADING, None)
        started = time.perf_counter()
        self._report(LoadProgress("waiting_for_memory", 0.0))
        if self._residency is not None:
            error: LLMServeError | None = self.too_big()
            if error is None and not self._residency.admit(owner, self.need(), since, claim):
                error = self._residency.no_room(self.config.unit_id)
            if error is not None:
                self.progress = None
                self._become(ModelState.UNLOADED, "no_room")
                raise error
        self.loaded_at = time.monotonic()
        try:
            with reporting(self._report):
                report("starting")
                last_load_growth()  # forget any figure this thread holds: only this load's counts
                engine = self._wake() or self._factory(self.config)
                report("finishing")
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            log.warning("loading %s failed: %s", self.config.api_id, reason)
            self.progress = None
            self.last_error = reason
            self._become(ModelState.FAILED, "load_failed")
            self._release()
            raise ModelLoadFailed(f"loading model '{self.config.api_id}' failed: {reason}") from None
        self.engine = engine
        self.memory_bytes = engine.memory_bytes
        estimate = self.estimate()
        weights = held(engine.memory_by_device, last_load_growth())
        # an engine with a KV cache has its requests' reservations counted as they come (KVLedger)
        reserve = {} if estimate is None or isinstance(engine, KVCacheSource) else estimate.kv_reserve
        self.footprint = add(weights, reserve)
        if self._residency is not None:
            self._residency.measured(self.config.unit_id, self.footprint)
        self.kv = self._kv_budget(engine)
        self.load_seconds = time.perf_counter() - started
        self.loaded_at = time.monotonic()
        self.progress = None
        self.last_error = None
        self._become(ModelState.LOADED, None)
        log.info(
            "model %s loaded in %.2f s, footprint %s",
            self.config.api_id,
            self.load_seconds,
            ", ".join(f"{device} {format_size(size)}" for device, size in sorted(self.footprint.items())),
        )
        return engine

    def _kv_budget(self, engine: Engine) -> KVBudget | None:
        """The KV budget: `kv_cache_memory` when set, else derived from what the device and the memory
        budget have left now that the weights are in (models/kv_budget.py)."""
        if not isinstance(engine, KVCacheSource):
            return None
        per_token = engine.kv_bytes_per_token
        memory, source = self.config.kv_cache_memory, "kv_cache_memory"
        if isinstance(engine, KVPoolSource):  # its cache is allocated: its cells are the budget
            source = source if memory is not None else "derived"
            device, room = engine.kv_device, engine.kv_room
            budget = KVBudget(engine.kv_cells, per_token, False, source, device, allocated=True, room=room)
            log.info("%s: KV cache of %d tokens allocated (%s)", self.config.api_id, budget.tokens, source)
            return budget
        if memory is None:
            source = "derived"
            budget_left = None
            if self._residency is not None and self._residency.budget is not None:
                limit = self._residency.budget.limit(engine.kv_device)
                used = self._residency.used().get(engine.kv_device, 0)
                budget_left = None if limit is None else limit - used
            memory = derived_memory(available_memory(engine.kv_device), budget_left)
        if memory is None:  # nothing to read the free memory from: the batch's size bounds it, as before
            tokens = self.config.max_batch_size * engine.context_length
        else:
            tokens = budget_tokens(memory, per_token)
        budget = KVBudget(tokens, per_token, engine.kv_padded, source, engine.kv_device)
        log.info(
            "%s: KV cache budget %d tokens (%s, %s per token, %s)",
            self.config.api_id,
            budget.tokens,
            format_size(budget.bytes),
            format_size(per_token),
            source,
        )
        return budget

    def _wake(self) -> Engine | None:
        engine, self.parked = self.parked, None
        if engine is not None:
            report("weights")
            engine.wake()
        return engine

    def drop(self, state: ModelState, reason: UnloadReason, error: str | None = None) -> None:
        """Frees the model for real: the engine drops its tensors, then the process returns the pages.
        With `unload_mode: offload` an engine that can park its weights in CPU memory does instead.
        `error`: why, when the model failed."""
        engine, self.engine = self.engine, None
        self.kv = None
        if engine is not None:
            self._become(ModelState.UNLOADING, reason)
            try:
                park = self.config.unload_mode == "offload" and reason in _PARKABLE
                if not (park and engine.offload()):
                    engine.close()
                else:
                    self.parked = engine
                    log.info("offloaded %s to CPU memory", self.config.api_id)
            except Exception:  # the references go regardless; the thread must live on
                log.exception("unloading the engine of %s failed", self.config.api_id)
                self.parked = None
            del engine
            gc.collect()
            trim_process_memory()
        self.last_error = error
        self._become(state, reason)
        self._release()

    def drop_parked(self) -> None:
        engine, self.parked = self.parked, None
        if engine is not None:
            engine.close()
            del engine
            gc.collect()
            trim_process_memory()

    def _release(self) -> None:
        if self._residency is not None:
            self._residency.release(self.config.unit_id)
