"""A model's memory footprint before it is loaded, from its files: weights plus a KV-cache reserve.

Weights: every tensor's element count (safetensors headers, or the GGUF file's tensor table) times the
bytes of the dtype it will be loaded in; with `in_situ_quant`, the 2-D weights of linear layers count
1 byte (int8) or 0.5625 bytes (nf4/fp4: 4 bits plus block scales). KV reserve: `KV_RESERVE_TOKENS` tokens
of keys and values for every layer. Only the headers are read, never the weights.

The estimate decides whether a model fits before it loads; once loaded, the worker measures the real
tensors and keeps that figure instead.
"""

from __future__ import annotations

import json
import logging
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmserve.config.entries import GGUFSpec, ModelConfig
from llmserve.config.sizes import Footprint

log = logging.getLogger(__name__)
KV_RESERVE_TOKENS = 4096  # one long sequence's cache; more sequences grow into the headroom
_DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "BF16": 2,
    "F16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
}
_QUANT_BYTES = {"int8": 1.0, "nf4": 0.5625, "fp4": 0.5625}


@dataclass(frozen=True)
class Estimate:
    weights: Footprint
    kv_reserve: Footprint

    @property
    def total(self) -> Footprint:
        return add(self.weights, self.kv_reserve)


def add(a: Footprint, b: Footprint) -> Footprint:
    return {d: a.get(d, 0) + b.get(d, 0) for d in {*a, *b}}


@dataclass(frozen=True)
class Tensor:
    name: str
    elements: int
    stored_bytes: int  # per element as stored (0 when quantized in the file)


def estimate(config: ModelConfig) -> Estimate | None:
    """None when the model's files are not on this disk (a hub model not downloaded yet)."""
    from llmserve.engine.devices import device_name, resolve_device, resolve_dtype

    found = _tensors_and_config(config)
    if found is None:
        return None
    tensors, text_config = found
    if config.engine == "llama.cpp":
        return _llama_cpp_estimate(config, text_config)
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    target = None if isinstance(dtype, str) else dtype.itemsize  # "auto": the checkpoint's own dtype
    quant = None if config.quant_mode is None else _QUANT_BYTES[config.quant_mode]
    total = 0.0
    for tensor in tensors:
        each: float = target or tensor.stored_bytes or 4
        if quant is not None and _is_linear_weight(tensor):
            each = quant
        total += tensor.elements * each
    kv = _kv_bytes_per_token(text_config, target or 2) * min(
        KV_RESERVE_TOKENS, int(text_config.get("max_position_embeddings") or KV_RESERVE_TOKENS)
    )
    name = device_name(device)
    return Estimate(_spread(int(total), name, config, text_config), _spread(kv, name, config, text_config))


def _llama_cpp_estimate(config: ModelConfig, text_config: dict[str, Any]) -> Estimate | None:
    """The file as it is (memory-mapped, quantized) and the KV cache llama.cpp will allocate (f16)."""
    from llmserve.engine.gguf import local_copy
    from llmserve.engine.llamacpp_plan import planned_cells

    assert isinstance(config.spec, GGUFSpec)
    path = local_copy(config.spec)
    if path is None:
        return None
    context = int(text_config.get("max_position_embeddings") or KV_RESERVE_TOKENS)
    per_token = _kv_bytes_per_token(text_config, 2)
    kv = per_token * planned_cells(config, context, per_token, free=None)[0]
    return Estimate({"cpu": path.stat().st_size}, {"cpu": kv})


def _spread(size: int, device: str, config: ModelConfig, text_config: dict[str, Any]) -> Footprint:
    """`num_device_layers`: each GPU's share of the layers, the rest on the CPU."""
    if config.device_layers is None:
        return {device: size}
    layers = int(text_config.get("num_hidden_layers") or 1)
    out: Footprint = {}
    for ordinal, count in config.device_layers:
        out[f"cuda:{ordinal}"] = out.get(f"cuda:{ordinal}", 0) + size * min(count, layers) // layers
    out["cpu"] = max(0, size - sum(out.values()))
    return {d: b for d, b in out.items() if b}


def _is_linear_weight(tensor: Tensor) -> bool:
    name = tensor.name
    return name.endswith(".weight") and "embed" not in name and "lm_head" not in name and "norm" not in name


def _kv_bytes_per_token(text: dict[str, Any], dtype_bytes: int) -> int:
    layers = int(text.get("num_hidden_layers") or 0)
    heads = int(text.get("num_attention_heads") or 0)
    kv_heads = int(text.get("num_key_value_heads") or heads)
    head_dim = int(text.get("head_dim") or (int(text.get("hidden_size") or 0) // max(heads, 1)))
    return 2 * layers * kv_heads * head_dim * dtype_bytes


def _tensors_and_config(config: ModelConfig) -> tuple[list[Tensor], dict[str, Any]] | None:
    spec = config.spec
    if isinstance(spec, GGUFSpec):
        from llmserve.engine.gguf import local_copy

        path = local_copy(spec)
        return None if path is None else read_gguf(path)
    directory = _local_dir(spec.model_id)
    if directory is None:
        return None
    try:
        text_config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    text_config = text_config.get("text_config") or text_config
    files = sorted(directory.glob("*.safetensors"))
    if files:
        return [t for f in files for t in read_safetensors(f)], text_config
    size = sum(f.stat().st_size for f in directory.glob("*.bin"))  # pickles: sizes only, float32 assumed
    return [Tensor("weights.bin", size // 4, 4)], text_config


def _local_dir(model_id: str) -> Path | None:
    if Path(model_id).is_dir():
        return Path(model_id)
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(model_id, "config.json")
    except Exception:  # a malformed id, a broken cache: no estimate
        return None
    return Path(found).parent if isinstance(found, str) else None


def read_safetensors(path: Path) -> list[Tensor]:
    """The tensors of a safetensors file, from its JSON header (8-byte length, then the header)."""
    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    tensors = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        elements = 1
        for dim in info["shape"]:
            elements *= int(dim)
        tensors.append(Tensor(name, elements, _DTYPE_BYTES.get(info["dtype"], 4)))
    return tensors


# GGUF metadata value types: struct formats of the fixed-size ones; 8 is a string, 9 an array.
_GGUF_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_GGUF_TO_CONFIG = {
    "block_count": "num_hidden_layers",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "embedding_length": "hidden_size",
    "context_length": "max_position_embeddings",
    "attention.key_length": "head_dim",
}


class _Cursor:
    def __init__(self, data: mmap.mmap) -> None:
        self.data, self.at = data, 0

    def take(self, fmt: str) -> Any:
        (value,) = struct.unpack_from(fmt, self.data, self.at)
        self.at += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        length = self.take("<Q")
        self.at += length
        return bytes(self.data[self.at - length : self.at]).decode("utf-8", errors="replace")

    def value(self, kind: int) -> Any:
        if kind == 8:
            return self.string()
        if kind == 9:
            item, count = self.take("<I"), self.take("<Q")
            if item in _GGUF_SCALARS:  # skip fixed-size arrays in one jump
                self.at += count * struct.calcsize(_GGUF_SCALARS[item])
            else:
                for _ in range(count):
                    self.value(item)
            return None
        return self.take(_GGUF_SCALARS[kind])


def read_gguf(path: Path) -> tuple[list[Tensor], dict[str, Any]]:
    """The tensor table and the model's shape (as config.json names) from a GGUF file's header."""
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        cursor = _Cursor(data)
        if bytes(data[:4]) != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file")
        cursor.at = 4
        version = cursor.take("<I")
        if version < 2:
            raise ValueError(f"{path}: GGUF version {version} is too old")
        tensor_count, kv_count = cursor.take("<Q"), cursor.take("<Q")
        meta: dict[str, Any] = {}
        for _ in range(kv_count):
            key = cursor.string()
            meta[key] = cursor.value(cursor.take("<I"))
        tensors = []
        for _ in range(tensor_count):
            name = cursor.string()
            dims = [cursor.take("<Q") for _ in range(cursor.take("<I"))]
            cursor.take("<I")  # the tensor's type (quantization)
            cursor.take("<Q")  # its offset
            elements = 1
            for dim in dims:
                elements *= dim
            tensors.append(Tensor(name, elements, 0))
    arch = str(meta.get("general.architecture", ""))
    text_config = {
        name: meta[f"{arch}.{key}"] for key, name in _GGUF_TO_CONFIG.items() if f"{arch}.{key}" in meta
    }
    return tensors, text_config
