"""The transformers/torch engine for chat and completions (loading: `hf_load.py`).

Continuous batching: `step` runs one forward pass for all decoding sequences together (see `batch.py`),
plus one prompt pass per group of joining sequences; each sequence keeps its own sampling parameters and
random generator, so a seed gives the same text batched or alone.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache

from llmserve.config.entries import ModelConfig
from llmserve.engine.base import ChatMessage, GenerationParams, TokenLogprob
from llmserve.engine.batch import Batch, joinable, left_padded, prefill_groups
from llmserve.engine.choosing import Chooser, choose
from llmserve.engine.devices import bytes_by_device, device_name, free_memory, resolve_device, resolve_dtype
from llmserve.engine.grammar import Guides
from llmserve.engine.hf_load import eos_ids, load_pretrained
from llmserve.engine.kvcache import (
    cache_length,
    kv_bytes_per_token,
    reserved_cache,
    returned_cache,
    with_cache,
)
from llmserve.engine.mixed import MixedCache, current, mixable
from llmserve.engine.pacing import PrefillPacer
from llmserve.engine.templates import chat_text
from llmserve.engine.token_bytes import token_bytes_of
from llmserve.errors import InvalidRequest

log = logging.getLogger(__name__)

PREFILL_CHUNK = 512  # prompt tokens read per step, across the new sequences (config: prefill_chunk)
# The smallest chunk read beside decoding streams: late in a 7,000-token prompt even 16 tokens cost ~2.5x
# an idle decode step on the CPU in float32 (attention over the long context), 4 tokens about one.
SMALLEST_CHUNK = 4


@dataclass
class _Sequence:
    chooser: Chooser
    prompt: list[int] | None  # until the first step prefills it
    last: int = -1  # the token the next step feeds
    cache: Any = None  # its own cache: while its prompt is read in chunks, or when the model's cache
    # cannot be batched
    done: int = 0  # prompt tokens in its cache so far (chunked prefill)
    extras: dict[str, Any] | None = None  # more prompt-pass inputs (a vision model's pixel values)


class PromptIds(list[int]):
    """Prompt token ids with more inputs for the prompt pass (e.g. `pixel_values`)."""

    def __init__(self, ids: Sequence[int], inputs: dict[str, Any]) -> None:
        super().__init__(ids)
        self.inputs = inputs


class HFEngine:
    """A causal LM and its tokenizer on one device."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        device: torch.device,
        *,
        batched: bool = True,
        prefill_chunk: int = PREFILL_CHUNK,
        context_length: int | None = None,
    ) -> None:
        self._model: Any = model
        self._tokenizer: Any = tokenizer
        self._device = device
        self._eos = eos_ids(model, tokenizer)
        text_config = model.config.get_text_config()
        self._context = int(getattr(text_config, "max_position_embeddings", 0) or 2048)
        self._context = min(self._context, context_length or self._context)  # the entry's limit
        self._seqs: dict[int, _Sequence] = {}
        self._batch = Batch(device)
        self._joinable = batched and joinable(DynamicCache(config=model.config))
        takes_keep = "logits_to_keep" in inspect.signature(model.forward).parameters
        self._last_logits_only: dict[str, int] = {"logits_to_keep": 1} if takes_keep else {}
        self._ids = itertools.count()
        self._guides = Guides.of_transformers(tokenizer)
        self._token_bytes = token_bytes_of(tokenizer, self.decode)
        self._pacer = PrefillPacer(prefill_chunk, min_chunk=SMALLEST_CHUNK)
        self._kv_bytes_per_token = kv_bytes_per_token(text_config, model.dtype)
        self._peak = 0
        # rows and prompt chunks in one pass (engine/mixed.py): a model whose layers are known to allow it,
        # running llmserve's attention function (the one that reads the plan: on the CPU)
        self.mixing = self._joinable and mixable(model) and bool(self._last_logits_only)
        self.mixed_steps = 0

    @classmethod
    def load(cls, config: ModelConfig) -> HFEngine:
        device = resolve_device(config.device)
        dtype = resolve_dtype(config.dtype, device, label=config.api_id)
        tokenizer, model = load_pretrained(config, dtype, device)
        model.eval()
        first = model.get_input_embeddings().weight.device  # where inputs go (num_device_layers may split)
        log.info("loaded %s on %s (%s)", config.api_id, first, model.dtype)
        return cls(
            model, tokenizer, first, prefill_chunk=config.prefill_chunk, context_length=config.context_length
        )

    @property
    def context_length(self) -> int:
        return self._context

    @property
    def memory_bytes(self) -> int:
        """The weights' and buffers' footprint (quantized weights count at their packed size)."""
        return int(self._model.get_memory_footprint())

    @property
    def memory_by_device(self) -> dict[str, int]:
        """Bytes of the weights and buffers on each device."""
        return bytes_by_device(self._model)

    @property
    def model(self) -> Any:
        return self._model

    @property
    def generation_sampling(self) -> dict[str, Any]:
        """The sampling values the model's generation config sets (its generation_config.json; a GGUF
        file has none), unchecked: the worker validates them."""
        config = self._model.generation_config
        names = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")
        return {name: getattr(config, name) for name in names if getattr(config, name, None) is not None}

    @property
    def chat_template(self) -> str:
        """The Jinja chat template prompts are rendered with ("" when the model has none)."""
        template = self._tokenizer.chat_template
        return template if isinstance(template, str) else ""

    def is_eos(self, token_id: int) -> bool:
        return token_id in self._eos

    def encode_chat(
        self, messages: Sequence[ChatMessage], tools: Sequence[dict[str, Any]] | None = None
    ) -> list[int]:
        template = self._tokenizer.chat_template

        def apply(rendered: list[dict[str, Any]], extra: dict[str, Any]) -> str:
            return str(
                self._tokenizer.apply_chat_template(
                    rendered, add_generation_prompt=True, tokenize=False, **extra
                )
            )

        text = chat_text(messages, tools, str(template) if template else None, apply)
        return list(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode_text(self, text: str) -> list[int]:
        return list(self._tokenizer(text)["input_ids"])

    def decode(self, token_ids: Sequence[int]) -> str:
        return str(self._tokenizer.decode(list(token_ids), skip_special_tokens=True))

    def start(self, prompt_ids: Sequence[int], params: GenerationParams) -> int:
        if not prompt_ids:
            raise InvalidRequest("the prompt is empty")
        vocab = int(self._model.get_output_embeddings().weight.shape[0])
        chooser = Chooser.begin(params, prompt_ids, vocab, self._guides, self._device)
        extras = prompt_ids.inputs if isinstance(prompt_ids, PromptIds) else None
        seq_id = next(self._ids)
        self._seqs[seq_id] = _Sequence(chooser, list(prompt_ids), extras=extras)
        return seq_id

    def step(self, seq_ids: Sequence[int]) -> list[int | None]:
        """Advances every started, unreleased sequence: those in the batch by one shared forward pass,
        new ones by their prompt pass, at most `prefill_chunk` prompt tokens per step (a longer prompt is
        read over several steps, so that it neither stalls the running streams nor needs the attention
        memory of its whole length at once: None for it until its last chunk). `seq_ids` must name all
        of them (the worker's running set)."""
        given = set(seq_ids)
        if len(seq_ids) != len(self._seqs) or given != set(self._seqs):
            raise ValueError("step() takes every started and unreleased sequence, each once")
        self._batch.keep(given)
        fresh = [i for i in seq_ids if self._seqs[i].prompt is not None]
        tokens: dict[int, int] = {}
        with torch.inference_mode():
            spent = 0
            if self.mixing and len(self._batch) and fresh and self._seqs[fresh[0]].extras is None:
                spent = self._mixed(fresh.pop(0), tokens)
            elif len(self._batch):
                tokens.update(self._decode())
            for seq_id in seq_ids:  # sequences whose cache cannot join the batch hold their own
                seq = self._seqs[seq_id]
                if seq.cache is not None and seq.prompt is None:
                    tokens[seq_id] = self._step_alone(seq)
            self._prefill(fresh, tokens, spent)
        for seq_id, token in tokens.items():
            seq = self._seqs[seq_id]
            seq.last = token
            seq.chooser.took(token)
        self._note_held()
        return [tokens.get(i) for i in seq_ids]

    @property
    def kv_bytes_per_token(self) -> int:
        return self._kv_bytes_per_token

    @property
    def kv_padded(self) -> bool:
        return self._joinable

    @property
    def kv_device(self) -> str:
        return device_name(self._device)

    @property
    def kv_tokens_held(self) -> int:
        alone = sum(cache_length(seq.cache) for seq in self._seqs.values() if seq.cache is not None)
        return self._batch.tokens_held + alone

    @property
    def kv_peak_tokens(self) -> int:
        return self._peak

    def _note_held(self, extra: int = 0) -> None:
        self._peak = max(self._peak, self.kv_tokens_held + extra)

    def _decode(self) -> dict[int, int]:
        """One forward pass for every row of the batch."""
        started = time.perf_counter()
        seq_ids = list(self._batch.seq_ids)
        seqs = [self._seqs[i] for i in seq_ids]
        logits = self._batch.forward(self._model, [seq.last for seq in seqs])
        chosen = dict(zip(seq_ids, self._pick(logits, seqs), strict=True))
        self._pacer.decoded(time.perf_counter() - started)
        return chosen

    def _pick(self, logits: torch.Tensor, seqs: Sequence[_Sequence]) -> list[int]:
        return choose(logits, [seq.chooser for seq in seqs], self._eos)

    def token_bytes(self, token_id: int) -> bytes:
        return self._token_bytes(token_id)

    def take_logprobs(self, seq_id: int) -> TokenLogprob | None:
        seq = self._seqs.get(seq_id)
        return None if seq is None else seq.chooser.take_logprobs()

    def _mixed(self, seq_id: int, tokens: dict[int, int]) -> int:
        """One forward pass for the batch's rows and the next tokens of `seq_id`'s prompt (as many as the
        pacer allows; `engine/mixed.py`); returns how many prompt tokens it read."""
        started = time.perf_counter()
        seq = self._seqs[seq_id]
        assert seq.prompt is not None
        start = seq.done
        take = min(len(seq.prompt) - start, self._pacer.budget(True))
        if seq.cache is None:
            seq.cache = reserved_cache(self._model.config, len(seq.prompt))
        plan, positions = self._batch.mixed(seq.cache)
        row_ids = list(self._batch.seq_ids)
        rows = [self._seqs[i] for i in row_ids]
        ids = [row.last for row in rows] + seq.prompt[start : start + take]
        positions += range(start, start + take)
        keep = torch.tensor([*range(len(rows)), len(ids) - 1], device=self._device)
        with current(plan):
            out = self._model(
                input_ids=torch.tensor([ids], dtype=torch.long, device=self._device),
                position_ids=torch.tensor([positions], dtype=torch.long, device=self._device),
                **with_cache(self._model, MixedCache(self._model.config, plan)),
                use_cache=True,
                logits_to_keep=keep,
            )
        logits = out.logits[0]
        tokens.update(zip(row_ids, self._pick(logits[: len(rows)], rows), strict=True))
        seq.done = start + take
        self.mixed_steps += 1
        if seq.done == len(seq.prompt):
            self._prompt_read(seq_id, logits[-1:], tokens)
        self._pacer.mixed(take, time.perf_counter() - started)
        return take

    def _prefill(self, seq_ids: list[int], tokens: dict[int, int], spent: int = 0) -> None:
        """Reads new prompts, as many tokens per step as the pacer allows (engine/pacing.py; at most
        `prefill_chunk`), in arrival order: prompts
        read whole run in padded groups of similar length, each group joining the batch in one copy; a
        prompt longer than what is left of the step's tokens is read a chunk at a time into its own
        cache. A model whose cache cannot be batched prefills and steps each sequence alone."""
        decoding = len(self._batch) > 0 or any(
            seq.cache is not None and seq.prompt is None for seq in self._seqs.values()
        )
        left = self._pacer.budget(decoding) - spent
        started = time.perf_counter()
        read = 0
        whole: list[int] = []
        for seq_id in seq_ids:
            seq = self._seqs[seq_id]
            assert seq.prompt is not None
            remaining = len(seq.prompt) - seq.done
            if left <= 0:
                break
            if seq.done == 0 and (remaining <= left or seq.extras is not None):  # images: in one pass
                whole.append(seq_id)
                take = remaining
            else:
                take = min(remaining, left)
                self._prefill_chunk_of(seq_id, take, tokens)
            left -= take
            read += take
        self._prefill_whole(whole, tokens)
        self._pacer.prefilled(read, time.perf_counter() - started, decoding)

    def _prefill_chunk_of(self, seq_id: int, take: int, tokens: dict[int, int]) -> None:
        """Reads the next `take` tokens of a long prompt into its own cache; on its last chunk the sequence
        gets its first token and joins the batch."""
        seq = self._seqs[seq_id]
        assert seq.prompt is not None
        start = seq.done
        ids = torch.tensor([seq.prompt[start : start + take]], dtype=torch.long, device=self._device)
        positions = torch.arange(start, start + take, dtype=torch.long, device=self._device).view(1, -1)
        mask = torch.ones((1, start + take), dtype=torch.long, device=self._device)
        cache = seq.cache
        if cache is None:  # room for the whole prompt at once: each chunk is written in place
            config = self._model.config
            cache = reserved_cache(config, len(seq.prompt)) if self._joinable else DynamicCache(config=config)
        out = self._model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            **with_cache(self._model, cache),
            **self._last_logits_only,
        )
        seq.cache = returned_cache(self._model, out)
        seq.done = start + take
        if seq.done < len(seq.prompt):
            return
        self._prompt_read(seq_id, out.logits[:, -1, :], tokens)

    def _prompt_read(self, seq_id: int, logits: torch.Tensor, tokens: dict[int, int]) -> None:
        """The last chunk of `seq_id`'s prompt is in its own cache: its first token from `logits` (`[1,
        vocab]`), and its cache joins the batch (if the model's cache can be batched)."""
        seq = self._seqs[seq_id]
        tokens[seq_id] = self._pick(logits, [seq])[0]
        seq.prompt = None
        if self._joinable:
            self._note_held()
            cache, seq.cache = seq.cache, None
            mask = torch.ones((1, seq.done), dtype=torch.long, device=self._device)
            self._batch.join([seq_id], cache, mask)

    def _prefill_whole(self, seq_ids: list[int], tokens: dict[int, int]) -> None:
        seqs = [self._seqs[i] for i in seq_ids]
        prompts = [seq.prompt or [] for seq in seqs]
        groups = [[i] for i in range(len(seqs))]
        if self._joinable:
            groups = prefill_groups([len(p) for p in prompts])
        for group in groups:
            ids, mask, positions = left_padded([prompts[i] for i in group], self._device)
            extras = seqs[group[0]].extras if len(group) == 1 else None
            out = self._model(
                **(extras or {}),
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                **with_cache(self._model, DynamicCache(config=self._model.config)),
                **self._last_logits_only,
            )
            members = [seqs[i] for i in group]
            for i, token in zip(group, self._pick(out.logits[:, -1, :], members), strict=True):
                tokens[seq_ids[i]] = token
                seqs[i].prompt = None
                seqs[i].extras = None
            self._note_held(int(ids.numel()))  # the group's cache beside the batch, before it joins
            if self._joinable:
                self._batch.join([seq_ids[i] for i in group], returned_cache(self._model, out), mask)
            else:
                members[0].cache = returned_cache(self._model, out)

    def _step_alone(self, seq: _Sequence) -> int:
        ids = torch.tensor([[seq.last]], dtype=torch.long, device=self._device)
        out = self._model(input_ids=ids, **with_cache(self._model, seq.cache), use_cache=True)
        seq.cache = returned_cache(self._model, out)
        return self._pick(out.logits[:, -1, :], [seq])[0]

    def release(self, seq_id: int) -> None:
        self._seqs.pop(seq_id, None)
        if not self._seqs:
            self._batch.clear()  # the rows of released sequences otherwise go at the next step

    def offload(self) -> bool:
        """Parks the weights in CPU memory (`unload_mode: offload`): only a whole model on one GPU, not
        quantized (bitsandbytes weights cannot move), with no sequence running."""
        movable = self._device.type == "cuda" and getattr(self._model, "hf_quantizer", None) is None
        if not movable or self._seqs or len(self.memory_by_device) != 1:
            return False
        self._batch.clear()
        self._model.to("cpu")
        torch.cuda.empty_cache()
        return True

    def wake(self) -> None:
        self._model.to(self._device)

    def close(self) -> None:
        self._seqs.clear()
        self._batch.clear()
        self._model = None
        self._tokenizer = None
        free_memory(self._device)
