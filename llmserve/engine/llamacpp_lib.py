"""A typed, minimal view of llama.cpp through llama-cpp-python's low-level bindings (`llama_cpp`, ctypes):
a model file (memory-mapped, never de-quantized) with its vocabulary, and a context (one KV cache shared
by many sequences) that decodes a batch of rows and hands back their logits. The only module that
imports `llama_cpp`. ctypes releases the GIL during each foreign call, so a decode never blocks the
event loop.

llama.cpp's threads meet at an OpenMP barrier after every operation of the graph (hundreds per token),
and libgomp's default is to spin there 300,000 times before sleeping: when one of them is preempted (the
event loop, the client or another process wants the same cores), the other spins out its whole time
slice, and a 16-row step on 2 busy cores took seconds instead of 0.13 s. So `GOMP_SPINCOUNT` defaults
to `SPIN_COUNT` (a few tens of microseconds, still enough to catch a peer that is running), unless set.
It is read when libgomp loads, so it is set here, before `llama_cpp` is imported.

llama.cpp's own log lines go to llmserve's debug log (`llmserve.engine.llamacpp`), not the terminal.

A llama.cpp built with AMX (`-march=native` on an Intel Sapphire Rapids or later) repacks the weights
into its AMX buffers, whose matrix product crashes the process on some of those machines (a segmentation
fault in `ggml_backend_amx_mul_mat`, llama.cpp issue 20824, seen here on SmolLM2). scripts/install.sh
builds without AMX; a build that has it loads models without llama.cpp's extra weight buffers (the AMX
and the repacked ones, `use_extra_bufts`), slower for some types but alive, and says so once.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

SPIN_COUNT = "20000"
os.environ.setdefault("GOMP_SPINCOUNT", SPIN_COUNT)

import llama_cpp  # noqa: E402  (after GOMP_SPINCOUNT: libgomp reads it once, when it loads)

log = logging.getLogger("llmserve.engine.llamacpp")
_INIT = threading.Lock()
_initialised = False
_ERROR = 4  # GGML_LOG_LEVEL_ERROR: a warning in llmserve's log; llama.cpp's other lines: debug


@llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
def _log_line(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
    line = text.decode("utf-8", errors="replace").rstrip()
    if line:
        log.log(logging.WARNING if level == _ERROR else logging.DEBUG, "%s", line)


def _initialise() -> None:
    global _initialised
    with _INIT:
        if not _initialised:
            llama_cpp.llama_log_set(_log_line, ctypes.c_void_p(0))
            llama_cpp.llama_backend_init()
            _initialised = True


def _has_amx() -> bool:
    info = llama_cpp.llama_print_system_info().decode("utf-8", errors="replace")
    return "AMX_INT8 = 1" in info


_AMX = _has_amx()
if _AMX:
    log.warning(
        "this llama.cpp was built with AMX, whose kernels crash on some CPUs (llama.cpp issue 20824): "
        "models load without its AMX and repacked weight buffers; scripts/install.sh builds without AMX"
    )


class LlamaFileError(RuntimeError):
    """llama.cpp could not load the file or build its context."""


class Model:
    """A GGUF file loaded by llama.cpp: its weights (memory-mapped) and its vocabulary."""

    def __init__(self, path: Path, gpu_layers: int = 0) -> None:
        _initialise()
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = gpu_layers
        params.load_mode = llama_cpp.LLAMA_LOAD_MODE_MMAP
        params.use_extra_bufts = not _AMX
        model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        if not model:
            raise LlamaFileError(f"llama.cpp could not load {path}")
        self._model: Any = model
        self._vocab: Any = llama_cpp.llama_model_get_vocab(model)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self._vocab))
        self.context_length = int(llama_cpp.llama_model_n_ctx_train(self._model))
        self._piece = ctypes.create_string_buffer(256)

    @property
    def pointer(self) -> Any:
        return self._model

    @property
    def vocab(self) -> Any:
        return self._vocab

    @property
    def size_bytes(self) -> int:
        """Bytes of all the weights as stored (quantized)."""
        return int(llama_cpp.llama_model_size(self._model))

    def meta(self, key: str) -> str | None:
        """A metadata value of the file as text (None when absent)."""
        size = llama_cpp.llama_model_meta_val_str(self._model, key.encode(), None, 0)
        if size < 0:
            return None
        buffer = ctypes.create_string_buffer(size + 1)
        llama_cpp.llama_model_meta_val_str(self._model, key.encode(), buffer, size + 1)
        return buffer.value.decode("utf-8", errors="replace")

    @property
    def kv_bytes_per_token(self) -> int:
        """Keys and values of one token across every layer, in the cache's type (f16)."""
        layers = int(llama_cpp.llama_model_n_layer(self._model))
        heads = max(1, int(llama_cpp.llama_model_n_head(self._model)))
        kv_heads = int(llama_cpp.llama_model_n_head_kv(self._model)) or heads
        arch = self.meta("general.architecture") or ""
        head_dim = int(llama_cpp.llama_model_n_embd(self._model)) // heads
        key_dim = int(self.meta(f"{arch}.attention.key_length") or head_dim)
        value_dim = int(self.meta(f"{arch}.attention.value_length") or head_dim)
        return layers * kv_heads * (key_dim + value_dim) * 2

    def token_text(self, token: int) -> str:
        """The token's text as the vocabulary spells it (special tokens included)."""
        return bytes(llama_cpp.llama_vocab_get_text(self._vocab, token)).decode("utf-8", errors="replace")

    @property
    def bos(self) -> int:
        return int(llama_cpp.llama_vocab_bos(self._vocab))

    @property
    def eos(self) -> int:
        return int(llama_cpp.llama_vocab_eos(self._vocab))

    def is_end(self, token: int) -> bool:
        """End of generation: end of sequence, end of turn..."""
        return bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        data = text.encode("utf-8")
        room = len(data) + 16
        out = (llama_cpp.llama_token * room)()
        n = llama_cpp.llama_tokenize(self._vocab, data, len(data), out, room, add_special, parse_special)
        if n < 0:  # the buffer was too small: -n tokens
            room = -n
            out = (llama_cpp.llama_token * room)()
            n = llama_cpp.llama_tokenize(self._vocab, data, len(data), out, room, add_special, parse_special)
        return list(out[:n])

    def piece(self, token: int) -> bytes:
        """The bytes the token adds to the text (part of a character's, for some); special tokens none."""
        n = llama_cpp.llama_token_to_piece(self._vocab, token, self._piece, len(self._piece), 0, False)
        if n < 0:
            buffer = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buffer, -n, 0, False)
            return bytes(buffer.raw[:n])
        return bytes(self._piece.raw[:n])

    def detokenize(self, tokens: Sequence[int]) -> str:
        """The text of `tokens`, special tokens left out."""
        if not tokens:
            return ""
        ids = (llama_cpp.llama_token * len(tokens))(*tokens)
        room = 8 * len(tokens) + 16
        out = ctypes.create_string_buffer(room)
        n = llama_cpp.llama_detokenize(self._vocab, ids, len(tokens), out, room, False, False)
        if n < 0:
            room = -n
            out = ctypes.create_string_buffer(room)
            n = llama_cpp.llama_detokenize(self._vocab, ids, len(tokens), out, room, False, False)
        return out.raw[:n].decode("utf-8", errors="replace")

    def lltokenizer(self) -> Any:
        """llguidance's view of the vocabulary (~1 s), for constrained decoding: each token's bytes, control
        tokens (and user-defined ones that look like them) marked special by a leading 0xFF, as
        `llguidance.llamacpp.lltokenizer_from_vocab` builds it, without its deprecated calls."""
        from llguidance import LLTokenizer

        control = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL
        user = llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED
        buffer = ctypes.create_string_buffer(16 * 1024 + 1)
        tokens: list[bytes] = []
        for token in range(self.n_vocab):
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buffer, 16 * 1024, 0, True)
            if n < 0:
                raise LlamaFileError(f"token {token} is longer than 16 KiB")
            piece = bytes(buffer.raw[:n])
            attr = int(llama_cpp.llama_vocab_get_attr(self._vocab, token))
            if attr & control or (attr & user and piece.startswith(b"<") and piece.endswith(b">")):
                piece = b"\xff" + piece
            tokens.append(piece)
        tokenize = ctypes.cast(llama_cpp.llama_cpp._lib.llama_tokenize, ctypes.c_void_p).value
        return LLTokenizer.from_llamacpp(  # type: ignore[attr-defined]
            tokens=tokens, vocab_ptr=self._vocab, tokenize_fptr=tokenize, eos_token=self.eos, slices=None
        )

    def close(self) -> None:
        if self._model is not None:
            llama_cpp.llama_model_free(self._model)
            self._model = None
            self._vocab = None


@dataclass(frozen=True)
class Row:
    """One token of a batch: its id, its position in its sequence, the sequence's KV slot, and whether
    its logits are wanted."""

    token: int
    position: int
    slot: int
    logits: bool


class Context:
    """One llama.cpp context: a KV cache of `cells` token slots for up to `slots` sequences, either
    `shared` (llama.cpp's unified cache: any sequence may use any free cell) or split evenly (each
    sequence its own `cells / slots`: no sequence's attention reads the others' cells), and one batch
    buffer."""

    def __init__(
        self, model: Model, *, cells: int, slots: int, shared: bool, batch: int, threads: int
    ) -> None:
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = cells
        params.n_seq_max = slots
        params.n_batch = batch
        params.n_ubatch = min(batch, 512)
        params.n_threads = threads
        params.n_threads_batch = threads
        params.kv_unified = shared
        params.no_perf = True
        context = llama_cpp.llama_init_from_model(model.pointer, params)
        if not context:
            raise LlamaFileError(f"llama.cpp could not build a context of {cells} tokens x {slots} sequences")
        self._context: Any = context
        self._memory: Any = llama_cpp.llama_get_memory(context)
        self._batch: Any = llama_cpp.llama_batch_init(batch, 0, 1)
        self._capacity = batch
        self._vocab = model.n_vocab
        self.cells = int(llama_cpp.llama_n_ctx(context))
        self.cells_per_sequence = int(llama_cpp.llama_n_ctx_seq(context))  # all of them when shared

    @property
    def batch_capacity(self) -> int:
        return self._capacity

    def decode(self, rows: Sequence[Row]) -> npt.NDArray[np.float32]:
        """Runs the rows through the model; returns the logits of the rows that asked, in their order
        (`[n, vocab]`, a copy). Raises `LlamaFileError` when llama.cpp refuses (no free KV cell)."""
        if len(rows) > self._capacity:
            raise ValueError(f"{len(rows)} rows exceed the batch of {self._capacity}")
        batch = self._batch
        batch.n_tokens = len(rows)
        for i, row in enumerate(rows):
            batch.token[i] = row.token
            batch.pos[i] = row.position
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = row.slot
            batch.logits[i] = row.logits
        code = llama_cpp.llama_decode(self._context, batch)
        if code != 0:
            raise LlamaFileError(f"llama_decode failed ({code}) on {len(rows)} rows")
        wanted = sum(1 for row in rows if row.logits)
        if not wanted:
            return np.zeros((0, self._vocab), dtype=np.float32)
        first = llama_cpp.llama_get_logits(self._context)
        return np.ctypeslib.as_array(first, shape=(wanted, self._vocab)).copy()

    def share(self, source: int, target: int, tokens: int) -> None:
        """Gives the sequence in `target` the first `tokens` cells of the one in `source` (in a shared
        cache the cells then belong to both: nothing is copied, and each keeps them until it is
        forgotten)."""
        llama_cpp.llama_memory_seq_cp(self._memory, source, target, 0, tokens)

    def forget(self, slot: int) -> None:
        """Frees every cell of the sequence in `slot`."""
        llama_cpp.llama_memory_seq_rm(self._memory, slot, -1, -1)

    def close(self) -> None:
        if self._context is not None:
            llama_cpp.llama_batch_free(self._batch)
            llama_cpp.llama_free(self._context)
            self._context = None
            self._memory = None


def gpu_offload() -> bool:
    """Whether this build of llama.cpp can put layers on a GPU (a CUDA or Metal build)."""
    _initialise()
    return bool(llama_cpp.llama_supports_gpu_offload())
