"""Scripted engines for exact tests of the worker. They implement the Engine protocol for real:
the model "writes" a fixed list of text pieces, one per token, then its EOS token."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from llmserve.config.entries import ModelConfig
from llmserve.engine.base import ChatMessage, Engine, GenerationParams

EOS = 0


class ScriptedEngine:
    def __init__(
        self,
        pieces: Sequence[str],
        *,
        context: int = 64,
        step_delay: float = 0.0,
        fail_at_step: int = 0,
        memory: int = 1000,
    ):
        self.memory = memory
        self.vocab = ["<eos>", *pieces]
        self.context = context
        self.step_delay = step_delay
        self.fail_at_step = fail_at_step
        self.sequences: dict[int, int] = {}  # seq id -> tokens produced so far
        self.released: list[int] = []
        self.steps = 0
        self.closed = False
        self.params: list[GenerationParams] = []  # what each started sequence was given
        self._next = 0

    @property
    def context_length(self) -> int:
        return self.context

    @property
    def memory_bytes(self) -> int:
        return self.memory

    @property
    def memory_by_device(self) -> dict[str, int]:
        return {"cpu": self.memory_bytes}

    def is_eos(self, token_id: int) -> bool:
        return token_id == EOS

    def encode_chat(
        self, messages: Sequence[ChatMessage], tools: Sequence[dict[str, Any]] | None = None
    ) -> list[int]:
        return [1] * sum(len(m.content.split()) + 1 for m in messages)

    def decode(self, token_ids: Sequence[int]) -> str:
        return "".join(self.vocab[i] for i in token_ids if i != EOS)

    def start(self, prompt_ids: Sequence[int], params: GenerationParams) -> int:
        self.params.append(params)
        self._next += 1
        self.sequences[self._next] = 0
        return self._next

    def step(self, seq_ids: Sequence[int]) -> list[int]:
        time.sleep(self.step_delay)
        self.steps += 1
        if self.steps == self.fail_at_step:
            raise RuntimeError("the model crashed")
        out = []
        for seq_id in seq_ids:
            produced = self.sequences[seq_id]
            self.sequences[seq_id] = produced + 1
            out.append(produced + 1 if produced + 1 < len(self.vocab) else EOS)
        return out

    def release(self, seq_id: int) -> None:
        self.sequences.pop(seq_id, None)
        self.released.append(seq_id)

    def close(self) -> None:
        self.closed = True

    def offload(self) -> bool:
        return False

    def wake(self) -> None:
        raise AssertionError("never offloaded")


class Parking(ScriptedEngine):
    """An engine on a "GPU": `unload_mode: offload` parks it instead of closing it; wake brings it back."""

    def offload(self) -> bool:
        return True

    def wake(self) -> None:
        pass


class ConfiguredEngine(ScriptedEngine):
    """A scripted engine whose model has a generation config (transformers' generation_config.json)."""

    def __init__(self, pieces: Sequence[str], generation: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(pieces, **kwargs)
        self.generation = generation

    @property
    def generation_sampling(self) -> dict[str, Any]:
        return dict(self.generation)

    def encode_text(self, text: str) -> list[int]:
        return [1] * (len(text.split()) + 1)


@dataclass
class Factory:
    """An EngineFactory that counts loads, can fail or block them, and keeps the engines it made."""

    make: Callable[[ModelConfig], Engine]
    fail_with: Exception | None = None
    load_gate: threading.Event | None = None
    loads: list[str] = field(default_factory=list)
    engines: list[Engine] = field(default_factory=list)

    def __call__(self, config: ModelConfig) -> Engine:
        if self.load_gate is not None:
            self.load_gate.wait(10)
        self.loads.append(config.unit_id)
        if self.fail_with is not None:
            raise self.fail_with
        engine = self.make(config)
        self.engines.append(engine)
        return engine


def scripted(pieces: Sequence[str], **kwargs: object) -> Factory:
    return Factory(lambda config: ScriptedEngine(pieces, **kwargs))  # type: ignore[arg-type]


class Slowed:
    """Wraps a real engine: every step takes at least `delay` seconds; records steps and releases."""

    def __init__(self, inner: Engine, delay: float) -> None:
        self.inner = inner
        self.delay = delay
        self.steps = 0
        self.released: list[int] = []

    @property
    def context_length(self) -> int:
        return self.inner.context_length

    @property
    def memory_bytes(self) -> int:
        return self.inner.memory_bytes

    @property
    def memory_by_device(self) -> dict[str, int]:
        return self.inner.memory_by_device

    def is_eos(self, token_id: int) -> bool:
        return self.inner.is_eos(token_id)

    def encode_chat(
        self, messages: Sequence[ChatMessage], tools: Sequence[dict[str, Any]] | None = None
    ) -> list[int]:
        return self.inner.encode_chat(messages, tools)

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.inner.decode(token_ids)

    def start(self, prompt_ids: Sequence[int], params: GenerationParams) -> int:
        return self.inner.start(prompt_ids, params)

    def step(self, seq_ids: Sequence[int]) -> list[int]:
        time.sleep(self.delay)
        self.steps += 1
        return self.inner.step(seq_ids)

    def release(self, seq_id: int) -> None:
        self.released.append(seq_id)
        self.inner.release(seq_id)

    def close(self) -> None:
        self.inner.close()

    def offload(self) -> bool:
        return self.inner.offload()

    def wake(self) -> None:
        self.inner.wake()


def assert_cancelled(engine: Engine, max_steps: int) -> None:
    """The engine (a `Slowed`) released its one sequence before `max_steps` and steps no more."""
    assert isinstance(engine, Slowed)
    deadline = time.monotonic() + 10
    while not engine.released:
        assert time.monotonic() < deadline, "the sequence was never released"
        time.sleep(0.01)
    steps = engine.steps
    assert steps < max_steps
    time.sleep(0.2)
    assert engine.steps == steps  # no more decode steps for a client that is gone
