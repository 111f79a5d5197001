"""The llama.cpp engine for GGUF files (`"engine": "llama.cpp"`): llama.cpp's kernels on the file as it
is (memory-mapped, quantized), under llmserve's worker and with llmserve's own sampling.

Continuous batching as llama.cpp's server does it: the KV cache is sized when the model loads
(`kv_cells`), one context or a few ("lanes", engine/llamacpp_lanes.py), each shared by the sequences
placed in it, each sequence in its own sequence slot. Every step is one `llama_decode` per lane: a row
for each decoding sequence, then the next chunk of each new prompt (chunked prefill, paced by
`engine/pacing.py` so that reading prompts never stalls the streams for long). A finished or cancelled
sequence's reservation is returned at once; in a shared cache its cells are kept until their room is
needed, and a new prompt that begins like a running or kept sequence of its lane (a system prompt, the
earlier turns of a conversation) takes those cells instead of reading them again. The worker admits a
request only when a lane has room for every token it may come to hold (`kv_room`: prompt +
`max_tokens`, reserved in that lane), so a decode can never run out of cells.

Logits come back from llama.cpp per row and go through `engine/choosing.py` (the transformers engine's
sampling, grammars and log probabilities). Prompts are rendered by the model's chat template as
transformers renders them (`templates.render`) and tokenized by llama.cpp's own tokenizer.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmserve.config.entries import GGUFSpec, ModelConfig
from llmserve.engine.base import ChatMessage, GenerationParams, TokenLogprob
from llmserve.engine.choosing import Chooser, choose
from llmserve.engine.grammar import Guides
from llmserve.engine.llamacpp_lanes import Lanes, Live
from llmserve.engine.llamacpp_lib import Context, Model, Row
from llmserve.engine.llamacpp_plan import Plan, plan
from llmserve.engine.pacing import PrefillPacer
from llmserve.engine.progress import report
from llmserve.engine.templates import chat_text, render
from llmserve.errors import InternalError, InvalidRequest

log = logging.getLogger(__name__)


@dataclass
class _Sequence:
    chooser: Chooser
    lane: int
    slot: int  # its llama.cpp sequence id in its lane's context
    prompt: list[int]
    end: int  # the most cells it may hold: prompt + max_tokens
    donor: int | None = None  # a sequence of the same lane whose first `shared` cells it takes, once written
    shared: int = 0
    generated: list[int] = field(default_factory=list)
    done: int = 0  # prompt tokens in the cache so far
    last: int = -1  # the token the next step feeds
    position: int = 0  # where `last` goes

    @property
    def prefilling(self) -> bool:
        return self.done < len(self.prompt)

    @property
    def cells(self) -> int:
        """KV cells it holds now."""
        return self.done if self.prefilling else self.position

    @property
    def held(self) -> list[int]:
        """The tokens its cells hold, in order."""
        return (self.prompt + self.generated)[: self.cells]


class LlamaCppEngine:
    """A GGUF file on llama.cpp, its KV cache in one context or a few lanes."""

    def __init__(
        self, model: Model, first: Context, layout: Plan, chat_template: str, build: Callable[[], Context]
    ) -> None:
        self._model = model
        self._lanes = Lanes(layout.lanes, layout.slots, first, build, sharing=layout.shared)
        self._plan = layout
        self._template = chat_template
        self._seqs: dict[int, _Sequence] = {}
        self._next_id = 0
        self._enders: frozenset[int] | None = None  # end-of-generation tokens, found on first need
        self._guides = Guides(model.lltokenizer)
        self._pacer = PrefillPacer(layout.prefill_chunk)
        self._peak = 0
        self.prompt_tokens_shared = 0  # prompt tokens taken from another sequence's cells, not read
        special = {"bos_token": model.bos, "eos_token": model.eos}
        self._special = {name: model.token_text(t) for name, t in special.items() if t >= 0}

    @classmethod
    def load(cls, config: ModelConfig) -> LlamaCppEngine:
        from llmserve.engine.gguf import local_file

        spec = config.spec
        if not isinstance(spec, GGUFSpec):
            raise ValueError(f"the llama.cpp engine runs GGUF files, not {config.kind} models")
        report("weights")
        path = local_file(spec)
        if path is None:
            raise FileNotFoundError(f"no file {spec.quantized_filename} for {spec.quantized_model_id}")
        gpu_layers = _gpu_layers(config)
        model = Model(Path(path), gpu_layers=gpu_layers)
        try:
            device = "cpu" if gpu_layers == 0 else "cuda:0"
            layout = plan(config, model.context_length, model.kv_bytes_per_token, device=device)
            report("kv_cache")

            def build() -> Context:
                return Context(
                    model,
                    cells=layout.lane_cells,
                    slots=layout.slots,
                    shared=layout.shared,
                    batch=layout.batch,
                    threads=layout.threads,
                )

            first = build()
        except BaseException:
            model.close()
            raise
        template = config.chat_template.text if config.chat_template is not None else None
        if template is None:
            template = model.meta("tokenizer.chat_template") or ""
        split = f"{first.cells_per_sequence} per sequence"
        log.info(
            "loaded %s on llama.cpp: %d KV cells (%s) x %s bytes per token, %d sequences, %d threads",
            config.api_id,
            first.cells * layout.lanes,
            f"shared, {layout.lanes} lane(s)" if layout.shared else split,
            layout.kv_bytes_per_token,
            layout.slots,
            layout.threads,
        )
        return cls(model, first, layout, template, build)

    # --- what the worker reads -------------------------------------------------------------------

    @property
    def context_length(self) -> int:
        return min(self._plan.sequence_cells, self._lanes.context(0).cells_per_sequence)

    @property
    def memory_bytes(self) -> int:
        """The weights as stored, plus the KV cache allocated whole at load."""
        return self._model.size_bytes + self.kv_cells * self._plan.kv_bytes_per_token

    @property
    def memory_by_device(self) -> dict[str, int]:
        return {self._plan.device: self.memory_bytes}

    @property
    def chat_template(self) -> str:
        return self._template

    @property
    def kv_bytes_per_token(self) -> int:
        return self._plan.kv_bytes_per_token

    @property
    def kv_device(self) -> str:
        return self._plan.device

    @property
    def kv_padded(self) -> bool:
        return False  # each sequence holds its own cells

    @property
    def kv_cells(self) -> int:
        """Token slots of the cache, every lane's (allocated at load, or when a lane is first used): the
        most the sequences can hold together."""
        return self._lanes.cells * len(self._lanes.lanes)

    def kv_room(self, end: int) -> bool:
        """Whether a sequence that may come to hold `end` tokens has a lane with room beside the others."""
        return self._lanes.room(end)

    @property
    def kept_tokens(self) -> int:
        """Cells of finished sequences kept for prompts that begin alike."""
        return self._lanes.kept_tokens

    def drop_kept(self) -> None:
        self._lanes.drop_kept()

    @property
    def kv_tokens_held(self) -> int:
        return sum(seq.cells for seq in self._seqs.values())

    @property
    def kv_peak_tokens(self) -> int:
        return self._peak

    # --- text --------------------------------------------------------------------------------------

    def is_eos(self, token_id: int) -> bool:
        return self._model.is_end(token_id)

    def encode_chat(
        self, messages: Sequence[ChatMessage], tools: Sequence[dict[str, Any]] | None = None
    ) -> list[int]:
        template = self._template

        def apply(rendered: list[dict[str, Any]], extra: dict[str, Any]) -> str:
            return render(template, rendered, {**self._special, **extra})

        text = chat_text(messages, tools, template, apply)
        return self._model.tokenize(text, add_special=False, parse_special=True)

    def encode_text(self, text: str) -> list[int]:
        return self._model.tokenize(text, add_special=True, parse_special=True)

    def decode(self, token_ids: Sequence[int]) -> str:
        return self._model.detokenize(token_ids)

    def token_bytes(self, token_id: int) -> bytes:
        return self._model.piece(token_id)

    def take_logprobs(self, seq_id: int) -> TokenLogprob | None:
        seq = self._seqs.get(seq_id)
        return None if seq is None else seq.chooser.take_logprobs()

    # --- sequences -------------------------------------------------------------------------------

    def start(self, prompt_ids: Sequence[int], params: GenerationParams) -> int:
        if not prompt_ids:
            raise InvalidRequest("the prompt is empty")
        room = self.context_length - len(prompt_ids)
        end = len(prompt_ids) + min(params.max_tokens or room, room)  # as the worker reserved it
        chooser = Chooser.begin(params, prompt_ids, self._model.n_vocab, self._guides)
        prompt = list(prompt_ids)
        live = [Live(i, seq.lane, seq.prompt) for i, seq in self._seqs.items()]
        placed = self._lanes.place(end, prompt, live)
        seq = _Sequence(chooser, placed.lane, placed.slot, prompt, end, placed.donor, placed.shared)
        seq.done = placed.taken
        self.prompt_tokens_shared += placed.taken
        seq_id, self._next_id = self._next_id, self._next_id + 1
        self._seqs[seq_id] = seq
        return seq_id

    def _take_shared(self, seq: _Sequence) -> None:
        """Gives `seq` its donor's cells once the donor has written them; forgets a donor that is gone."""
        donor = self._seqs.get(seq.donor) if seq.donor is not None else None
        if donor is None:
            seq.donor, seq.shared = None, 0
        elif donor.done >= seq.shared:
            self._lanes.context(seq.lane).share(donor.slot, seq.slot, seq.shared)
            seq.done, seq.donor = seq.shared, None
            self.prompt_tokens_shared += seq.shared

    def step(self, seq_ids: Sequence[int]) -> list[int | None]:
        """One `llama_decode` per lane: a row per decoding sequence, then prompt chunks of the new ones
        in order (at most the pacer's budget in all), logits only where a token is chosen."""
        if len(seq_ids) != len(self._seqs) or set(seq_ids) != set(self._seqs):
            raise ValueError("step() takes every started and unreleased sequence, each once")
        for seq_id in seq_ids:
            if self._seqs[seq_id].donor is not None:
                self._take_shared(self._seqs[seq_id])
        rows: list[list[Row]] = [[] for _ in self._lanes.lanes]
        choosing: list[list[int]] = [[] for _ in self._lanes.lanes]  # whose logits come back, in row order
        for seq_id in seq_ids:
            seq = self._seqs[seq_id]
            if not seq.prefilling:
                rows[seq.lane].append(Row(seq.last, seq.position, seq.slot, True))
                choosing[seq.lane].append(seq_id)
        decoding = any(rows)
        left = self._pacer.budget(decoding)
        read = 0
        for seq_id in seq_ids:
            seq = self._seqs[seq_id]
            room = min(left, self._plan.batch - len(rows[seq.lane]))
            if not seq.prefilling or room <= 0 or seq.donor is not None:  # (waits for its donor's cells)
                continue
            take = min(len(seq.prompt) - seq.done, room)
            end = seq.done + take
            last = len(seq.prompt) - 1
            rows[seq.lane] += [Row(seq.prompt[p], p, seq.slot, p == last) for p in range(seq.done, end)]
            seq.done = end
            if not seq.prefilling:
                seq.position = len(seq.prompt)
                choosing[seq.lane].append(seq_id)
            left -= take
            read += take
        started = time.perf_counter()
        logits = [self._lanes.context(i).decode(r) for i, r in enumerate(rows) if r]
        self._paced(read, time.perf_counter() - started, decoding)
        self._peak = max(self._peak, self.kv_tokens_held)
        chosen = [seq_id for ids in choosing for seq_id in ids]
        tokens: dict[int, int] = {}
        if chosen:
            every = logits[0] if len(logits) == 1 else np.concatenate(logits)
            seqs = [self._seqs[i] for i in chosen]
            choosers = [s.chooser for s in seqs]
            if all(c.plain_greedy for c in choosers):  # the common case, without torch
                picked = [int(t) for t in every.argmax(axis=1)]
            else:
                import torch  # the first request that samples imports it

                picked = choose(torch.from_numpy(every), choosers, self._end_tokens())
            for seq_id, seq, token in zip(chosen, seqs, picked, strict=True):
                if seq.last >= 0:  # it fed its last token this step
                    seq.position += 1
                seq.last = token
                seq.generated.append(token)
                seq.chooser.took(token)
                tokens[seq_id] = token
        return [tokens.get(i) for i in seq_ids]

    def _end_tokens(self) -> frozenset[int]:
        """Every end-of-generation token (`min_tokens` bans them), listed once (~40 ms for 49k tokens)."""
        if self._enders is None:
            model = self._model
            self._enders = frozenset(t for t in range(model.n_vocab) if model.is_end(t))
        return self._enders

    def _paced(self, read: int, seconds: float, decoding: bool) -> None:
        if not read:
            if decoding:
                self._pacer.decoded(seconds)
        elif decoding:
            self._pacer.mixed(read, seconds)
        else:
            self._pacer.prefilled(read, seconds, decoding)

    def release(self, seq_id: int) -> None:
        seq = self._seqs.pop(seq_id, None)
        if seq is not None:
            self._lanes.release(seq.lane, seq.slot, seq.end, seq.held)

    # --- memory ----------------------------------------------------------------------------------

    def offload(self) -> bool:
        return False  # the weights are a memory map of the file: unloading is as cheap as parking

    def wake(self) -> None:
        raise InternalError("a llama.cpp model is never parked")

    def close(self) -> None:
        self._seqs.clear()
        self._lanes.close()
        self._model.close()


def _gpu_layers(config: ModelConfig) -> int:
    """Layers llama.cpp puts on the GPU: none on the CPU; `num_device_layers` (a count) on a GPU build;
    else every layer when the device is CUDA and this llama.cpp build can offload."""
    if config.device == "cpu" or os.environ.get("CUDA_VISIBLE_DEVICES") == "":
        return 0
    from llmserve.engine.llamacpp_lib import gpu_offload

    if not gpu_offload():
        return 0
    if config.device_layers is not None:
        return sum(count for _, count in config.device_layers)
    return -1  # all of them
