"""Which waiting request of a model starts next, and when: the first in line is encoded and checked
once (`prepare`), then started as soon as its tokens fit, beside those running, both the model's KV
budget and what every model's requests reserve on the device together (`KVLedger`). Until then it waits,
and so does everything behind it: arrival order is kept. Runs on the model's worker thread."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

from llmserve.config.sampling import SamplingDefaults
from llmserve.config.sizes import format_size
from llmserve.engine.base import Engine
from llmserve.errors import InternalError, LLMServeError, Overloaded
from llmserve.models.jobs import Generate
from llmserve.models.kv_budget import KVBudget, KVLedger
from llmserve.models.sequences import Prepared, fill_defaults, prepare

log = logging.getLogger(__name__)
Verdict = Literal["start", "wait"]


@dataclass
class Admission:
    unit_id: str
    ledger: KVLedger | None = None
    kv: KVBudget | None = None  # of the loaded engine
    # the waiting requests, encoded (by id(job); each job stays in the worker's line until it goes)
    _ready: dict[int, tuple[Generate, Prepared]] = field(default_factory=dict)

    def loaded(self, kv: KVBudget | None, held_tokens: Callable[[], int]) -> None:
        self.kv = kv
        self._ready.clear()
        if kv is not None and not kv.allocated and self.ledger is not None:
            self.ledger.track(self.unit_id, lambda: held_tokens() * kv.bytes_per_token)

    def unloaded(self) -> None:
        self.kv = None
        self._ready.clear()
        if self.ledger is not None:
            self.ledger.forget(self.unit_id)

    def prepare(self, engine: Engine, job: Generate, defaults: SamplingDefaults) -> Prepared:
        """`job` with the model's defaults filled in, encoded and checked, once (as it arrives, so that a
        prompt that can never fit is refused at once, not after its wait); raises the request's error
        (`InvalidRequest`, or `InternalError` when encoding failed)."""
        found = self._ready.get(id(job))
        if found is not None and found[0] is job:
            return found[1]
        filled = replace(job, params=fill_defaults(defaults, job.params)) if job.params.omitted else job
        try:
            prepared = prepare(engine, filled, self.unit_id, None if self.kv is None else self.kv.tokens)
        except LLMServeError:
            raise
        except Exception as exc:  # this request's problem (e.g. the tokenizer choked): fail it alone
            log.exception("admitting a request for %s failed", self.unit_id)
            raise InternalError(f"preparing the prompt failed: {type(exc).__name__}: {exc}") from None
        self._ready[id(job)] = (job, prepared)
        return prepared

    def discard(self, job: Generate) -> None:
        """`job` left the line (started, failed or cancelled)."""
        self._ready.pop(id(job), None)

    def verdict(self, running: list[int], prepared: Prepared) -> Verdict:
        """Whether the prepared request starts now beside requests reaching `running` (their ends) and
        takes its reservation; raises `Overloaded` when it could only wait for nothing (nothing runs
        anywhere to give memory back)."""
        kv = self.kv
        if kv is None:
            return "start"
        if running and not kv.fits(running, prepared.end):
            return "wait"
        if self.reserve([*running, prepared.end]):
            return "start"
        if running or (self.ledger is not None and self.ledger.others_reserve(self.unit_id, kv.device)):
            return "wait"  # room comes back as requests finish
        if self.reserve([*running, prepared.end]):  # another model let go between the two checks
            return "start"
        need = format_size(kv.cost([prepared.end]) * kv.bytes_per_token)
        raise Overloaded(
            f"not enough free memory on {kv.device} for the KV cache of this request ({need}); retry shortly",
            retry_after=1,
        )

    def reserve(self, ends: list[int]) -> bool:
        """Sets this model's KV reservation to what requests reaching `ends` may hold, if every model's
        reservations then fit the device (always, when it shrinks)."""
        kv = self.kv
        if kv is None or kv.allocated or self.ledger is None:
            return True
        return self.ledger.try_reserve(self.unit_id, kv.device, kv.cost(ends) * kv.bytes_per_token)
