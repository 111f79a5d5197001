"""The engine boundary: what a worker needs from a loaded model, and the values that cross it.

The protocol is step-based: `start` registers a sequence (its prompt is prefilled on its first step),
`step` advances every given sequence by one token. A worker calls `step` with all its running
sequences, so an engine that batches them (continuous batching) fits the same protocol.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from llmserve.config.entries import ModelConfig

FinishReason = Literal["stop", "length"]
Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True)
class ChatMessage:
    """`content` is the message's text. A message with images also has `parts`, its content in order:
    text, or the index of an image in `images` (encoded bytes, decoded by the engine)."""

    role: Role
    content: str
    images: tuple[bytes, ...] = ()
    parts: tuple[str | int, ...] = ()
    tool_calls: tuple[dict[str, Any], ...] = ()  # an assistant's calls, as OpenAI sends them
    tool_call_id: str | None = None  # a tool message: the call it answers


@dataclass(frozen=True)
class Constraint:
    """What the output must be (constrained decoding): `kind` "json_schema", `schema` its JSON text;
    `grammar`: the grammar compiled from it, once, where the request is checked (engine/grammar.py)."""

    kind: str
    schema: str
    grammar: str | None = field(default=None, compare=False, repr=False)

    @classmethod
    def json_object(cls) -> Constraint:
        return cls("json_schema", json.dumps({"type": "object"}))

    @classmethod
    def json_schema(cls, schema: dict[str, Any]) -> Constraint:
        return cls("json_schema", json.dumps(schema))


@dataclass(frozen=True)
class GenerationParams:
    """Per-request sampling and stopping. `max_tokens=None` means up to the end of the context."""

    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k cut
    seed: int | None = None
    stop: tuple[str, ...] = ()
    presence_penalty: float = 0.0  # OpenAI: minus this for every token already generated
    frequency_penalty: float = 0.0  # OpenAI: minus this times how often the token was generated
    repetition_penalty: float = 1.0  # transformers/vLLM: logits of prompt and output tokens divided by it
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, added to its logit)
    min_p: float = 0.0  # drop tokens less likely than min_p times the most likely one
    stop_token_ids: tuple[int, ...] = ()  # more tokens that end the output (not part of it)
    ignore_eos: bool = False  # the end-of-sequence token does not end the output
    min_tokens: int = 0  # end-of-sequence and stop tokens are impossible before this many tokens
    logprobs: int | None = None  # report each token's log probability and this many alternatives
    constraint: Constraint | None = None  # the output must follow this grammar (response_format)
    # Sampling fields the request left out (their values here are the API's defaults): the model's
    # worker fills them from the model's defaults when it admits the request (config/sampling.py).
    omitted: frozenset[str] = frozenset()

    @property
    def shapes_logits(self) -> bool:
        """Whether the logits need more than temperature, top-k, top-p and min-p."""
        return bool(
            self.presence_penalty
            or self.frequency_penalty
            or self.repetition_penalty != 1.0
            or self.logit_bias
            or self.min_tokens
        )


class Engine(Protocol):
    """A loaded model. Every method runs on the model's worker thread only."""

    @property
    def context_length(self) -> int: ...

    @property
    def memory_bytes(self) -> int:
        """The loaded weights' footprint in bytes."""
        ...

    @property
    def memory_by_device(self) -> dict[str, int]:
        """The same footprint per device ("cpu", "cuda:0")."""
        ...

    def is_eos(self, token_id: int) -> bool: ...

    def encode_chat(
        self, messages: Sequence[ChatMessage], tools: Sequence[dict[str, Any]] | None = None
    ) -> list[int]:
        """Render the chat template (offering `tools`) and tokenize. Raises `InvalidRequest` if the model
        has no template."""
        ...

    def decode(self, token_ids: Sequence[int]) -> str:
        """Detokenize without special tokens."""
        ...

    def start(self, prompt_ids: Sequence[int], params: GenerationParams) -> int:
        """Register a sequence; returns its id."""
        ...

    def step(self, seq_ids: Sequence[int]) -> list[int | None]:
        """Advance each sequence by one token; returns the new token of each, in order, or None for a
        sequence whose prompt is still being read (chunked prefill: it gets its first token later)."""
        ...

    def release(self, seq_id: int) -> None:
        """Forget a sequence and free its cache."""
        ...

    def close(self) -> None:
        """Drop the weights and return their memory (called once, on unload)."""
        ...

    def offload(self) -> bool:
        """Move the weights to CPU memory to free the GPU (`unload_mode: offload`). False when this engine
        cannot (it is on the CPU already, or split or quantized in a way that cannot move)."""
        ...

    def wake(self) -> None:
        """Move offloaded weights back to their devices."""
        ...


@dataclass(frozen=True)
class TokenLogprob:
    """A generated token's log probability under the model (before sampling adjustments), with the
    most likely tokens at that position."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


@runtime_checkable
class LogprobSource(Protocol):
    """An engine that can report the log probabilities of the tokens it generated."""

    def take_logprobs(self, seq_id: int) -> TokenLogprob | None:
        """The last step's log probabilities of this sequence (when its parameters asked for them)."""
        ...

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes this token adds to the output (part of a character's, for a partial one)."""
        ...


@runtime_checkable
class KVCacheSource(Protocol):
    """An engine whose sequences hold a KV cache that grows with their tokens: what the worker needs to
    admit requests by the tokens they may hold (models/kv_budget.py)."""

    @property
    def kv_bytes_per_token(self) -> int:
        """Bytes of keys and values one token holds across every layer."""
        ...

    @property
    def kv_device(self) -> str:
        """Where the cache lives ("cpu", "cuda:N")."""
        ...

    @property
    def kv_padded(self) -> bool:
        """True when the running sequences share one left-padded cache: it holds rows x the longest
        row, not the sum of the rows."""
        ...

    @property
    def kv_tokens_held(self) -> int:
        """Token slots (padding included) the caches hold now."""
        ...

    @property
    def kv_peak_tokens(self) -> int:
        """The most token slots held at once since the engine loaded, counted within each step."""
        ...


@runtime_checkable
class KVPoolSource(Protocol):
    """An engine whose KV cache is allocated whole when it loads (llama.cpp): its cells bound what the
    requests may reserve, and its memory is in the model's footprint, not taken from the free memory."""

    @property
    def kv_cells(self) -> int:
        """Token slots of the cache, shared by the sequences."""
        ...

    def kv_room(self, end: int) -> bool:
        """Whether one more sequence that may come to hold `end` tokens has room beside the running
        ones (a cache divided among contexts holds less than its free cells in all)."""
        ...


@runtime_checkable
class GenerationConfigSource(Protocol):
    """An engine whose model has its own generation config (transformers' `generation_config.json`)."""

    @property
    def generation_sampling(self) -> dict[str, Any]:
        """The sampling values it sets (temperature, top_p, top_k, min_p, repetition_penalty), as read."""
        ...


@runtime_checkable
class TextEncoder(Protocol):
    """An engine that takes raw prompts (/v1/completions), not only chats."""

    def encode_text(self, text: str) -> list[int]:
        """Tokenize as the model expects a raw prompt (with its beginning-of-sequence token if any)."""
        ...


@runtime_checkable
class Embedder(Protocol):
    """An engine that turns inputs into vectors (the `Embedding` spec)."""

    @property
    def dimensions(self) -> int: ...

    def tokenize(self, text: str) -> list[int]: ...

    def embed(self, inputs: Sequence[Sequence[int]]) -> list[list[float]]: ...


EngineFactory = Callable[[ModelConfig], Engine]
