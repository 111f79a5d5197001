"""Per-model sampling defaults: what a request gets for the sampling fields it leaves out.

For each field, in order: the request's own value (an explicit value always wins, `temperature: 1`
included); else the `sampling` of the model's config entry; else the model's own generation config
(`generation_config.json`, read when the model loads: temperature, top_p, top_k, min_p,
repetition_penalty); else the API's default. Like vLLM's `--generation-config auto` and Ollama's
Modelfile parameters.

A request marks what it left out in `GenerationParams.omitted` (its values there are the API's
defaults); the model's worker fills those fields when it admits the request, once the model is loaded
and its generation config known (`models/sequences.py`, `fill_defaults`). Pure data: no torch, no
engine types.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

log = logging.getLogger(__name__)

Value = float | int | None
Source = Literal["config", "generation_config", "api"]
FIELDS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "max_tokens")
FROM_GENERATION_CONFIG = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")
# The API's defaults; max_tokens None: up to the end of the context (/v1/completions' own default is 16).
API_DEFAULTS: dict[str, Value] = {
    "temperature": 1.0,
    "top_p": 1.0,
    "top_k": 0,
    "min_p": 0.0,
    "repetition_penalty": 1.0,
    "max_tokens": None,
}


class Sampling(BaseModel):
    """The `sampling` key of a config entry: the model's defaults, in the ranges a request accepts."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    temperature: Annotated[float, Field(ge=0, le=2, allow_inf_nan=False)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None  # 0: no top-k cut
    min_p: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] | None = None
    repetition_penalty: Annotated[float, Field(gt=0, le=10, allow_inf_nan=False)] | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None

    def values(self) -> dict[str, Value]:
        """The fields it sets."""
        return {name: getattr(self, name) for name in FIELDS if getattr(self, name) is not None}


def from_generation_config(raw: Mapping[str, Any], model: str) -> dict[str, Value]:
    """The sampling values of a model's generation config that a request could have sent; any other
    (out of range, not a number) is left out with a warning, so that the API's default applies."""
    found: dict[str, Value] = {}
    for name in FROM_GENERATION_CONFIG:
        value = raw.get(name)
        if value is None:
            continue
        try:
            found[name] = getattr(Sampling.model_validate({name: value}), name)
        except ValidationError as exc:
            reason = str(exc.errors()[0]["msg"])
            log.warning("%s: generation_config %s = %r is ignored: %s", model, name, value, reason)
    return found


@dataclass(frozen=True)
class SamplingDefaults:
    """The defaults in force for one model: each field's value and where it comes from."""

    values: Mapping[str, Value]
    sources: Mapping[str, Source]

    @classmethod
    def of(cls, config: Sampling | None, generation: Mapping[str, Value]) -> SamplingDefaults:
        """`config` (the entry's `sampling`) over `generation` (its generation config) over the API."""
        layers: tuple[tuple[Source, Mapping[str, Value]], ...] = (
            ("config", {} if config is None else config.values()),
            ("generation_config", generation),
            ("api", API_DEFAULTS),
        )
        values: dict[str, Value] = {}
        sources: dict[str, Source] = {}
        for name in FIELDS:
            source, layer = next((s, layer) for s, layer in layers if name in layer)
            values[name], sources[name] = layer[name], source
        return cls(values, sources)
