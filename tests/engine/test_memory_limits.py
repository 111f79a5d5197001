"""engine/memory: the memory cgroup's limit and usage (v1 and v2) and what the host has left."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmserve.engine import memory


def fake_cgroup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lines: list[str]) -> None:
    monkeypatch.setattr(memory, "_own_cgroups", lambda: [tuple(line.split(":", 2)[1:]) for line in lines])


def test_v2_limit_and_usage_without_the_inactive_page_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    group = tmp_path / "app" / "svc"
    group.mkdir(parents=True)
    (group / "memory.max").write_text("8589934592\n")
    (group / "memory.current").write_text("1610612736\n")
    (group / "memory.stat").write_text("anon 1073741824\ninactive_file 536870912\nactive_file 0\n")
    fake_cgroup(tmp_path, monkeypatch, ["0::/app/svc"])
    assert memory.cgroup_memory(str(tmp_path)) == (8 << 30, 1 << 30)
    (group / "memory.max").write_text("max\n")  # no limit
    assert memory.cgroup_memory(str(tmp_path)) is None


def test_v1_limit_and_usage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    group = tmp_path / "memory" / "jobs" / "one"
    group.mkdir(parents=True)
    (group / "memory.limit_in_bytes").write_text("4294967296\n")
    (group / "memory.usage_in_bytes").write_text("536870912\n")
    (group / "memory.stat").write_text("cache 0\ntotal_inactive_file 0\n")
    fake_cgroup(tmp_path, monkeypatch, ["9:pids:/", "4:memory:/jobs/one", "0::/"])
    assert memory.cgroup_memory(str(tmp_path)) == (4 << 30, 512 << 20)
    (group / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # v1's "no limit"
    assert memory.cgroup_memory(str(tmp_path)) is None


def test_available_host_memory_is_the_least_of_the_cgroup_and_the_kernel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(memory, "meminfo_available", lambda: 10 << 30)
    monkeypatch.setattr(memory, "cgroup_memory", lambda: (8 << 30, 5 << 30))
    assert memory.available_host_memory() == 3 << 30
    monkeypatch.setattr(memory, "cgroup_memory", lambda: None)
    assert memory.available_host_memory() == 10 << 30
    assert memory.available_memory("cpu") == 10 << 30


def test_embedding_inputs_go_in_passes_of_bounded_tokens() -> None:
    from llmserve.engine.embedding import token_batches

    lengths = [100, 5, 4000, 7, 3000, 100]
    batches = token_batches(lengths, 8192)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(len(b) * max(lengths[i] for i in b) <= 8192 for b in batches)
    assert token_batches([10_000, 3], 8192) == [[1], [0]]  # one input alone may be longer
    assert token_batches([5] * 4, 8192) == [[0, 1, 2, 3]]
