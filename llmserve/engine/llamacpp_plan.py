"""How a llama.cpp context is sized, before it is built: its KV cells, sequence slots, batch and threads.

llama.cpp allocates (and clears) the whole KV cache when the context is built, so its size is decided
at load, not grown with the requests. A request may hold at most `context_length` tokens (the entry's,
else the model's trained context). The cells:
- when every one of `max_batch_size` sequences can have `context_length` cells within the KV memory,
  each gets its own (llama.cpp's split cache: a sequence's attention reads only its own cells, the
  fastest layout); the memory is `max_batch_size x context_length` cells;
- else the sequences share pools of cells (llama.cpp's unified cache), as many as the KV memory holds;
  the worker admits each request with the cells it may come to need (prompt + `max_tokens`), so a
  decode never runs out of cells. In a shared pool every row's attention reads every used cell (the
  others' sequences masked out, but still read: 64 rows of ~170 tokens on SmolLM2 took 0.8 s a step,
  against 0.26 s with a cache split per sequence), so the cells are divided among up to `MAX_LANES`
  contexts ("lanes"), as many as each still holds a full `context_length`: rows x cells falls with the
  number of lanes (64 rows on two lanes: 0.30 s a step). A lane is one `llama_decode` per step.
The KV memory is `kv_cache_memory` (the entry's, or `--kv-cache-memory`) when set; else the larger of
one full context and `DEFAULT_CELLS` cells, at most `FREE_SHARE` of the memory free when the model loads.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llmserve.config.engines import MAX_SEQUENCES
from llmserve.config.entries import ModelConfig

DEFAULT_CELLS = 16384  # SmolLM2-135M: 360 MiB of f16 keys and values
MAX_LANES = 4  # contexts a shared cache is divided among, at most
FREE_SHARE = 0.5  # of the free memory, what a derived cache may take (the rest: other models, prefill)
CELL_ROUND = 256  # llama.cpp pads the context to this


@dataclass(frozen=True)
class Plan:
    cells: int  # KV cache token slots, all lanes together
    slots: int  # sequences at once (llama.cpp sequence ids, in each lane)
    shared: bool  # pools of cells shared by the sequences (else `sequence_cells` each)
    sequence_cells: int  # the most one sequence holds: its prompt plus its answer
    batch: int  # rows one decode may take: a row per sequence plus a prompt chunk
    threads: int
    device: str  # where the weights and cache live ("cpu", "cuda:0")
    kv_bytes_per_token: int
    prefill_chunk: int
    lanes: int = 1  # contexts the cells are divided among, `cells / lanes` each

    @property
    def lane_cells(self) -> int:
        return self.cells // self.lanes


def plan(
    config: ModelConfig,
    trained_context: int,
    kv_bytes_per_token: int,
    *,
    available: Callable[[str], int | None] | None = None,
    device: str = "cpu",
) -> Plan:
    """The context for `config`'s model, whose cache lives on `device`."""
    if available is None:
        from llmserve.engine.memory import available_memory

        available = available_memory
    per_token = max(1, kv_bytes_per_token)
    slots = min(config.max_batch_size, MAX_SEQUENCES)
    context = sequence_context(config, trained_context)
    cells, shared = planned_cells(config, trained_context, per_token, free=available(device))
    lanes = 1
    if shared:  # as many lanes as each holds a whole context, at most MAX_LANES
        lanes = max(1, min(MAX_LANES, slots, cells // _rounded(context)))
        cells = cells // lanes // CELL_ROUND * CELL_ROUND * lanes
    return Plan(
        cells=cells,
        slots=slots,
        shared=shared,
        sequence_cells=min(context, cells // lanes),
        batch=config.prefill_chunk + slots,
        threads=config.threads or cores_available(),
        device=device,
        kv_bytes_per_token=per_token,
        prefill_chunk=config.prefill_chunk,
        lanes=lanes,
    )


def _rounded(cells: int) -> int:
    return -(-cells // CELL_ROUND) * CELL_ROUND


def sequence_context(config: ModelConfig, trained_context: int) -> int:
    """The most tokens one request holds: the entry's `context_length`, at most the trained context."""
    return min(trained_context, config.context_length or trained_context)


def planned_cells(
    config: ModelConfig, trained_context: int, kv_bytes_per_token: int, *, free: int | None
) -> tuple[int, bool]:
    """The KV cells and whether the sequences share them (see the module's docstring); `free`: bytes
    free on the cache's device, if known."""
    per_token = max(1, kv_bytes_per_token)
    slots = min(config.max_batch_size, MAX_SEQUENCES)
    context = sequence_context(config, trained_context)
    if config.kv_cache_memory is not None:
        memory_cells = config.kv_cache_memory // per_token
    else:
        memory_cells = max(context, DEFAULT_CELLS)
        if free is not None:
            memory_cells = min(memory_cells, int(free * FREE_SHARE) // per_token)
    if slots * context <= memory_cells:
        return slots * context, False
    return max(CELL_ROUND, memory_cells // CELL_ROUND * CELL_ROUND), True


def cores_available() -> int:
    """The CPUs this process may run on: its affinity, within the cgroup's CPU quota if it has one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _cgroup_cpus()
    return max(1, min(cores, quota) if quota is not None else cores)


def _cgroup_cpus() -> int | None:
    try:  # cgroup v2: "max 100000" or "200000 100000"
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            return max(1, int(quota) // int(period))
        return None
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        quota_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return max(1, quota_us // period_us) if quota_us > 0 else None
    except (OSError, ValueError):
        return None
