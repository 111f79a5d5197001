"""`dtype: auto` on the CPU: bfloat16 only where the CPU computes it natively, with the reason in the load log.
The CPU's features are faked both ways (torch's own checks and /proc/cpuinfo), then a tiny model is loaded."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from model_configs import plain

from llmserve.engine import devices
from llmserve.engine.devices import cpu_bf16, resolve_dtype
from llmserve.engine.hf import HFEngine

CPU = torch.device("cpu")


@pytest.fixture
def fake_cpu(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """A CPU with no bfloat16 anywhere and torch kernels for AVX2, until a test adds a feature."""
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    monkeypatch.setattr(devices, "_cpuinfo_flags", lambda: ({"avx2", "fma"}, set()))
    monkeypatch.setattr(devices, "_torch_reports", lambda check: False)
    cpu_bf16.cache_clear()
    yield monkeypatch
    cpu_bf16.cache_clear()


def load_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "llmserve.engine.devices"]


def test_avx2_only_cpu_loads_auto_in_float32_and_says_why(
    fake_cpu: pytest.MonkeyPatch, tiny_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="llmserve.engine.devices"):
        engine = HFEngine.load(plain(tiny_dir, "tiny"))
    assert engine.model.dtype == torch.float32
    assert load_messages(caplog) == ["tiny: dtype auto -> float32: this CPU (AVX2) has no native bfloat16"]


@pytest.mark.parametrize(
    ("flags", "torch_check", "capability", "feature"),
    [
        (({"avx512f", "avx512_bf16"}, set()), None, "AVX512", "AVX512-BF16"),
        (({"avx512f", "amx_bf16", "amx_tile"}, set()), None, "AVX512", "AMX"),
        ((set(), set()), "_is_avx512_bf16_supported", "AVX512", "AVX512-BF16"),  # no /proc/cpuinfo
        ((set(), set()), "_is_amx_tile_supported", "AVX512", "AMX"),
        ((set(), {"fp", "asimd", "sve", "bf16"}), None, "SVE256", "Arm BF16"),
    ],
)
def test_native_bf16_cpu_loads_auto_in_bfloat16(
    fake_cpu: pytest.MonkeyPatch,
    tiny_dir: Path,
    caplog: pytest.LogCaptureFixture,
    flags: tuple[set[str], set[str]],
    torch_check: str | None,
    capability: str,
    feature: str,
) -> None:
    fake_cpu.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    fake_cpu.setattr(devices, "_cpuinfo_flags", lambda: flags)
    fake_cpu.setattr(devices, "_torch_reports", lambda check: check == torch_check)
    with caplog.at_level(logging.INFO, logger="llmserve.engine.devices"):
        engine = HFEngine.load(plain(tiny_dir, "tiny"))
    assert engine.model.dtype == torch.bfloat16
    assert load_messages(caplog) == [
        f"tiny: dtype auto -> bfloat16: this CPU ({capability}) computes bfloat16 natively ({feature})"
    ]


def test_avx512_without_bf16_is_float32(fake_cpu: pytest.MonkeyPatch) -> None:
    fake_cpu.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    fake_cpu.setattr(devices, "_cpuinfo_flags", lambda: ({"avx512f", "avx512bw", "avx512vl"}, set()))
    assert resolve_dtype("auto", CPU) == torch.float32
    assert cpu_bf16().why() == "this CPU (AVX512) has no native bfloat16"


def test_explicit_dtypes_are_kept_and_a_slow_bfloat16_is_noted(
    fake_cpu: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="llmserve.engine.devices"):
        assert resolve_dtype("bfloat16", CPU, "m") == torch.bfloat16
        assert resolve_dtype("float32", CPU, "m") == torch.float32
        assert resolve_dtype("auto", CPU) == torch.float32  # no label (footprint estimates): no log
    assert load_messages(caplog) == [
        "m: dtype bfloat16 as configured, though this CPU (AVX2) has no native bfloat16: float32 may be faster",
        "m: dtype float32 as configured",
    ]


def test_cpuinfo_flags_read_x86_flags_and_arm_features_apart(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    text = "processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16\nFeatures\t: fp asimd bf16\n"
    real_read = Path.read_text
    monkeypatch.setattr(
        Path,
        "read_text",
        lambda self, *a, **k: text if str(self) == "/proc/cpuinfo" else real_read(self, *a, **k),
    )
    assert devices._cpuinfo_flags() == ({"fpu", "avx2", "avx512_bf16"}, {"fp", "asimd", "bf16"})


def test_this_machine_agrees_with_torch() -> None:
    """The real check: a CPU torch says has AVX512-BF16 or AMX is native; one whose kernels are at most AVX2
    and that /proc/cpuinfo gives no bfloat16 is not."""
    cpu_bf16.cache_clear()
    found = cpu_bf16()
    assert found.capability == torch.backends.cpu.get_cpu_capability()
    if torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported():
        assert found.native
    x86, arm = devices._cpuinfo_flags()
    if not ({"avx512_bf16", "amx_bf16"} & x86 or "bf16" in arm) and found.capability in ("AVX2", "DEFAULT"):
        assert not found.native
