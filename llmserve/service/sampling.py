"""The sampling fields of a chat or (legacy) completions request as the engine's `GenerationParams`."""

from __future__ import annotations

from llmserve.engine.base import GenerationParams
from llmserve.protocol.openai_generation import SamplingRequest

DEFAULTED = ("temperature", "top_p", "top_k", "repetition_penalty", "min_p")  # the model may set these


def sampling_params(request: SamplingRequest) -> GenerationParams:
    """The generation parameters the request's sampling fields set (the endpoints add their own with
    `replace`). A field left out (or null) gets the API's default here and is marked `omitted`, so that
    the model's own default replaces it (config/sampling.py)."""
    return GenerationParams(
        temperature=1.0 if request.temperature is None else request.temperature,
        top_p=1.0 if request.top_p is None else request.top_p,
        top_k=max(request.top_k or 0, 0),
        repetition_penalty=1.0 if request.repetition_penalty is None else request.repetition_penalty,
        min_p=0.0 if request.min_p is None else request.min_p,
        seed=request.seed,
        stop=request.stop_strings(),
        presence_penalty=request.presence_penalty or 0.0,
        frequency_penalty=request.frequency_penalty or 0.0,
        logit_bias=request.logit_biases(),
        omitted=frozenset(name for name in DEFAULTED if getattr(request, name) is None),
    )
