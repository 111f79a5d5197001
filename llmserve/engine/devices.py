"""Where a model runs and in which dtype: `device` and `dtype` of the config resolved for this machine."""

from __future__ import annotations

import functools
import gc
import itertools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from llmserve.config.entries import Dtype

log = logging.getLogger(__name__)

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def resolve_device(device: str) -> torch.device:
    """`auto` is CUDA when there is one, else the CPU; an absent CUDA device is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device '{device}' asked for, but this machine has no CUDA device")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise RuntimeError(
                f"device '{device}' asked for, but only {torch.cuda.device_count()} CUDA devices"
            )
    return resolved


@dataclass(frozen=True)
class CpuBf16:
    """Whether this CPU computes bfloat16 natively, and what says so."""

    native: bool
    capability: str  # the instruction set of torch's CPU kernels: "AVX2", "AVX512", "DEFAULT", "SVE256"...
    feature: str | None  # what computes bfloat16 natively: "AMX", "AVX512-BF16", "Arm BF16"; None: nothing

    def why(self) -> str:
        if self.native:
            return f"this CPU ({self.capability}) computes bfloat16 natively ({self.feature})"
        return f"this CPU ({self.capability}) has no native bfloat16"


def _cpuinfo_flags() -> tuple[set[str], set[str]]:
    """The x86 `flags` and the Arm `Features` of /proc/cpuinfo (empty where there is no such file)."""
    try:
        info = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set(), set()
    x86: set[str] = set()
    arm: set[str] = set()
    for line in info.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            x86.update(value.split())
        elif key.strip() == "Features":
            arm.update(value.split())
    return x86, arm


def _torch_reports(check: str) -> bool:
    """One of torch's own CPU feature checks (`torch.cpu._is_avx512_bf16_supported`...; private, so absent
    on some versions: then False and /proc/cpuinfo decides)."""
    found = getattr(torch.cpu, check, None)
    try:
        return bool(found()) if callable(found) else False
    except Exception:  # a private check that fails is no evidence either way
        return False


@functools.cache
def cpu_bf16() -> CpuBf16:
    """Elsewhere than on AMX, AVX512-BF16 or Arm BF16 CPUs torch emulates bfloat16, slower than float32
    (AVX2: a 16x576x1536 matmul takes 5x float32's time)."""
    capability = str(torch.backends.cpu.get_cpu_capability())
    x86, arm = _cpuinfo_flags()
    feature = None
    if _torch_reports("_is_amx_tile_supported") or "amx_bf16" in x86:
        feature = "AMX"
    elif _torch_reports("_is_avx512_bf16_supported") or "avx512_bf16" in x86:
        feature = "AVX512-BF16"
    elif "bf16" in arm:
        feature = "Arm BF16"
    return CpuBf16(feature is not None, capability, feature)


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bfloat16 natively (x86 AMX or AVX512-BF16, Arm BF16)."""
    return cpu_bf16().native


def dtype_choice(dtype: Dtype, device: torch.device) -> tuple[torch.dtype | str, str]:
    """The dtype to load a model in, and why. `auto`: the checkpoint's own dtype on CUDA; on the CPU
    bfloat16 where the CPU computes it natively (measured on SmolLM2: 1.6x float32 for 1 stream, 2.2x
    for 16), else float32."""
    if dtype != "auto":
        chosen = DTYPES[dtype]
        if device.type == "cpu" and chosen == torch.bfloat16 and not cpu_bf16().native:
            return chosen, f"dtype bfloat16 as configured, though {cpu_bf16().why()}: float32 may be faster"
        return chosen, f"dtype {dtype} as configured"
    if device.type == "cuda":
        return "auto", "dtype auto -> the checkpoint's own dtype (CUDA)"
    bf16 = cpu_bf16()
    chosen = torch.bfloat16 if bf16.native else torch.float32
    return chosen, f"dtype auto -> {str(chosen).removeprefix('torch.')}: {bf16.why()}"


def resolve_dtype(dtype: Dtype, device: torch.device, label: str | None = None) -> torch.dtype | str:
    """`dtype_choice`'s dtype; with a `label` (the model being loaded), the choice and why are logged."""
    chosen, why = dtype_choice(dtype, device)
    if label is not None:
        log.info("%s: %s", label, why)
    return chosen


def device_name(device: torch.device) -> str:
    """The device's name in footprints and budgets: "cpu", "cuda:N" ("cuda" alone is "cuda:0")."""
    return f"cuda:{device.index or 0}" if device.type == "cuda" else str(device)


def bytes_by_device(model: Any) -> dict[str, int]:
    """Bytes of a torch module's parameters and buffers on each device (tied weights count once)."""
    out: dict[str, int] = {}
    tensors = itertools.chain(model.parameters(), model.buffers())
    for tensor in {t.data_ptr(): t for t in tensors}.values():
        name = device_name(tensor.device)
        out[name] = out.get(name, 0) + tensor.numel() * tensor.element_size()
    return out


def free_memory(device: torch.device) -> None:
    """After an engine dropped its tensors: collect them, and give CUDA's cached blocks back."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
