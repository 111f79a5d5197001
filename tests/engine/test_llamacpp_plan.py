"""How the llama.cpp context is sized: each sequence its own cells when they all fit the KV memory,
else shared pools (lanes, each holding a whole context); the KV memory set, or derived from the free
memory; threads from the cores."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmserve.config.entries import GGUFSpec, ModelConfig
from llmserve.engine import llamacpp_plan
from llmserve.engine.llamacpp_plan import DEFAULT_CELLS, MAX_LANES, plan

PER_TOKEN = 1024  # bytes of keys and values per token
SPEC = GGUFSpec(tok_model_id="t", quantized_model_id="q", quantized_filename="f.gguf")


def entry(**options: object) -> ModelConfig:
    return ModelConfig("m", "m", SPEC, engine="llama.cpp", **options)  # type: ignore[arg-type]


def plenty(device: str) -> int:
    return 64 << 30


def test_every_sequence_gets_its_own_cells_when_they_fit() -> None:
    layout = plan(entry(max_batch_size=8, context_length=1024), 8192, PER_TOKEN, available=plenty)
    assert (layout.cells, layout.shared, layout.sequence_cells, layout.slots) == (8 * 1024, False, 1024, 8)
    assert layout.batch == 512 + 8  # a row per sequence beside a prompt chunk


def test_else_the_sequences_share_pools_each_holding_a_whole_context() -> None:
    layout = plan(entry(max_batch_size=64), 8192, PER_TOKEN, available=plenty)
    assert (layout.cells, layout.shared, layout.sequence_cells) == (DEFAULT_CELLS, True, 8192)
    assert (layout.lanes, layout.lane_cells) == (2, 8192)
    short = plan(entry(max_batch_size=64, context_length=1000), 8192, PER_TOKEN, available=plenty)
    assert (short.lanes, short.lane_cells, short.sequence_cells) == (MAX_LANES, DEFAULT_CELLS // 4, 1000)
    few = plan(entry(max_batch_size=2, kv_cache_memory=8 << 20), 8192, PER_TOKEN, available=plenty)
    assert (few.lanes, few.cells, few.sequence_cells) == (1, 8192, 8192)  # one lane holds one context


def test_kv_cache_memory_sets_the_pool_and_free_memory_bounds_a_derived_one() -> None:
    layout = plan(entry(max_batch_size=64, kv_cache_memory=40 << 20), 8192, PER_TOKEN, available=plenty)
    assert (layout.cells, layout.shared, layout.lanes) == (40 * 1024, True, MAX_LANES)
    tight = plan(entry(max_batch_size=64), 8192, PER_TOKEN, available=lambda device: 8 << 20)
    assert (tight.cells, tight.sequence_cells, tight.lanes) == (
        4096,
        4096,
        1,
    )  # half the free memory: one shorter sequence
    unknown = plan(entry(max_batch_size=2), 8192, PER_TOKEN, available=lambda device: None)
    assert (unknown.cells, unknown.shared) == (2 * 8192, False)


def test_threads_from_the_entry_or_the_cores(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert plan(entry(threads=3), 2048, PER_TOKEN, available=plenty).threads == 3
    monkeypatch.setattr(llamacpp_plan, "_cgroup_cpus", lambda: 1)
    assert plan(entry(), 2048, PER_TOKEN, available=plenty).threads == 1
    monkeypatch.setattr(llamacpp_plan, "_cgroup_cpus", lambda: None)
    assert llamacpp_plan.cores_available() >= 1


@pytest.mark.parametrize(("given", "expected"), [(None, "20000"), ("5", "5")])
def test_llama_cpp_threads_spin_briefly_unless_told(given: str | None, expected: str) -> None:
    """libgomp reads GOMP_SPINCOUNT once, when llama_cpp loads it: llamacpp_lib sets a short spin first
    (a long one makes a preempted thread stall its peers for a time slice), keeping a value given."""
    import os
    import subprocess
    import sys

    pytest.importorskip("llama_cpp")
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    if given is not None:
        env["GOMP_SPINCOUNT"] = given
    code = "import os, llmserve.engine.llamacpp_lib as m; print(os.environ['GOMP_SPINCOUNT'])"
    found = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert found.stdout.strip() == expected


def test_llama_cpp_is_built_without_amx() -> None:
    """scripts/install.sh builds llama.cpp without its AMX kernels, which crash some Intel CPUs that
    have AMX (llama.cpp issue 20824): a build with them has the engine load without extra buffers."""
    llama_cpp = pytest.importorskip("llama_cpp")
    info = llama_cpp.llama_print_system_info().decode()
    assert "AVX" in info or "NEON" in info or "CUDA" in info, info  # the line it is read from
    assert "AMX_INT8 = 1" not in info
