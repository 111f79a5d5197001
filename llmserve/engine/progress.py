"""Load progress: the stage a loading model is in and how far along the whole load is.

The worker sets a reporter around its engine factory call (a context variable, so the engine code, on the
same thread, reports without being handed anything); the status and the events show the latest report.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass

# The stages of a load in order, with the fraction of the whole load done when each begins.
STAGES: dict[str, float] = {
    "waiting_for_memory": 0.0,  # in line for room (--max-loaded-models, --memory-budget)
    "starting": 0.02,
    "tokenizer": 0.05,
    "converting_gguf": 0.1,  # first load of a GGUF file: parse and de-quantize
    "weights": 0.1,  # reading weights (the converted copy, or a checkpoint)
    "saving_converted": 0.8,  # writing the converted copy for the next loads
    "kv_cache": 0.85,  # llama.cpp: allocating the context's KV cache
    "finishing": 0.95,  # measuring, warming up
}


@dataclass(frozen=True)
class LoadProgress:
    stage: str
    fraction: float

    def as_json(self) -> dict[str, object]:
        return {"stage": self.stage, "fraction": round(self.fraction, 3)}


Reporter = Callable[[LoadProgress], None]
_reporter: ContextVar[Reporter | None] = ContextVar("llmserve_load_progress", default=None)


def report(stage: str, fraction: float | None = None) -> None:
    """Reports that the current load entered `stage` (fraction: its start's, unless given)."""
    callback = _reporter.get()
    if callback is not None:
        callback(LoadProgress(stage, STAGES[stage] if fraction is None else fraction))


@contextlib.contextmanager
def reporting(callback: Reporter) -> Iterator[None]:
    token = _reporter.set(callback)
    try:
        yield
    finally:
        _reporter.reset(token)
