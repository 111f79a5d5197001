"""Where a model's weights go and in which form: `num_device_layers` as an accelerate `device_map`,
`in_situ_quant` as a bitsandbytes config, quantized while it is read (`unmapped_reads`, `own_weights`).
Errors are `PlacementError`s whose text is the load's reason."""

from __future__ import annotations

import bisect
import contextlib
import importlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

# Imported with the engine, not by the first load: its ~130 MB (torch._dynamo, sympy, scipy...) are the
# library's, held for the life of the process, not the first model's measured growth.
import transformers.modeling_utils
from transformers import AutoConfig, AutoModelForCausalLM, BitsAndBytesConfig

from llmserve.config.options import DeviceLayers, QuantMode


class PlacementError(RuntimeError):
    """The placement asked for cannot be done on this machine or this model."""


def quantization_config(mode: QuantMode) -> BitsAndBytesConfig:
    """LLM.int8 for 8-bit names, nf4/fp4 (bfloat16 compute) for 4-bit ones. Imports bitsandbytes now,
    before the load is measured (its ~50 MB are the library's, not the model's)."""
    importlib.import_module("bitsandbytes")
    if mode == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)  # type: ignore[no-untyped-call]
    return BitsAndBytesConfig(  # type: ignore[no-untyped-call]
        load_in_4bit=True, bnb_4bit_quant_type=mode, bnb_4bit_compute_dtype=torch.bfloat16
    )


@contextlib.contextmanager
def unmapped_reads(enabled: bool = True) -> Iterator[list[str]]:
    """For an `in_situ_quant` load (when `enabled`). transformers memory-maps a safetensors file and
    reads every tensor through the map, so all of the file's pages (the whole full-precision model) end up
    in the RSS, next to the quantized model. Within this block it reads each tensor with `pread` instead
    (safetensors' backend for Windows) into memory freed as soon as the tensor is quantized. Yields the
    files so read. A process-wide swap: hold `LOAD_LOCK`. Where transformers does not ask for the mmap
    backend by name, nothing changes, and `own_weights` closes the map after the load."""
    module: Any = transformers.modeling_utils
    original = getattr(module, "safe_open", None)
    read: list[str] = []
    if not enabled or original is None:
        yield read
        return

    def reading(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("backend") == "mmap" and kwargs.get("device", "cpu") == "cpu":
            kwargs["backend"] = "pread"
            read.append(str(args[0] if args else kwargs.get("filename")))
        return original(*args, **kwargs)

    module.safe_open = reading
    try:
        yield read
    finally:
        module.safe_open = original


def own_weights(model: torch.nn.Module) -> int:
    """After an `in_situ_quant` load: copies the tensors still read from the checkpoint's memory map (what
    bitsandbytes leaves unquantized: embeddings, norms) into memory of the process's own, so that the map
    closes. Else it stays open for them, with every page of the file in the RSS (all were read to quantize
    the linear layers): the full-precision model's size on top of the quantized one. Returns how many
    were copied: none when `unmapped_reads` did its work."""
    maps = _file_maps()
    copied = 0
    for module in model.modules():
        for tensor in module._parameters.values():  # tied weights are one Parameter: copied once
            if type(tensor) is torch.nn.Parameter and _mapped(tensor, maps):  # not bitsandbytes' classes
                tensor.data = tensor.data.clone()
                copied += 1
        for name, buffer in module._buffers.items():
            if type(buffer) is torch.Tensor and _mapped(buffer, maps):
                module._buffers[name] = buffer.clone()
                copied += 1
    return copied


def _file_maps() -> tuple[list[int], list[int]] | None:
    """The (starts, ends) of the files mapped into this process, sorted; None where /proc has no maps."""
    try:
        lines = Path("/proc/self/maps").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    spans = []
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].startswith("/"):  # a file's path ([heap], [stack]: not files)
            start, _, end = fields[0].partition("-")
            spans.append((int(start, 16), int(end, 16)))
    spans.sort()
    return [start for start, _ in spans], [end for _, end in spans]


def _mapped(tensor: torch.Tensor, maps: tuple[list[int], list[int]] | None) -> bool:
    """On the CPU in memory torch did not allocate (its storage is not resizable), inside a mapped file
    (where the maps are unknown: any such memory, a read buffer of safetensors' as well)."""
    if tensor.device.type != "cpu" or tensor.untyped_storage().resizable():
        return False
    if maps is None:
        return True
    starts, ends = maps
    at = tensor.data_ptr()
    index = bisect.bisect_right(starts, at) - 1
    return index >= 0 and at < ends[index]


def layer_device_map(
    before: Sequence[str], layers: str, num_layers: int, after: Sequence[str], layout: DeviceLayers
) -> dict[str, str]:
    """Decoder layers `layers.0 .. layers.N-1` in order onto the GPUs of `layout` (ordinal, count),
    the rest on the CPU; modules `before` the layers (embeddings) go with the first layer, modules
    `after` them (final norm, LM head) with the last."""
    wanted = sum(count for _, count in layout)
    if wanted > num_layers:
        raise PlacementError(f"num_device_layers places {wanted} layers on GPUs; the model has {num_layers}")
    devices = [f"cuda:{ordinal}" for ordinal, count in layout for _ in range(count)]
    devices += ["cpu"] * (num_layers - len(devices))
    mapping = {name: devices[0] for name in before}
    mapping.update({f"{layers}.{i}": device for i, device in enumerate(devices)})
    mapping.update({name: devices[-1] for name in after})
    return mapping


def check_gpus(layout: DeviceLayers) -> None:
    present = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for ordinal, count in layout:
        if count and ordinal >= present:
            raise PlacementError(
                f"num_device_layers asks for GPU {ordinal}, but this machine has {present} CUDA device(s)"
            )


def model_device_map(
    model_id: str, layout: DeviceLayers, auto_class: Any = AutoModelForCausalLM, **source: Any
) -> dict[str, str]:
    """The device map of `layout` for the checkpoint `model_id` (`source`: e.g. its `gguf_file`), from its
    module tree built on the meta device (no weights read). A tied LM head stays with the embeddings."""
    from accelerate import init_empty_weights

    check_gpus(layout)
    config = AutoConfig.from_pretrained(model_id, **source)
    with init_empty_weights():
        skeleton = auto_class.from_config(config)
    num_layers = int(config.get_text_config().num_hidden_layers)
    found = [
        (name, module)
        for name, module in skeleton.named_modules()
        if isinstance(module, torch.nn.ModuleList) and len(module) == num_layers
    ]
    if not found:
        raise PlacementError("num_device_layers: this model has no list of decoder layers to split")
    layers = found[0][0]
    tied = None
    if getattr(config, "tie_word_embeddings", False):
        head = skeleton.get_output_embeddings()
        tied = next((name for name, module in skeleton.named_modules() if module is head), None)
    before: list[str] = []
    after: list[str] = []
    seen_layers = False

    def walk(prefix: str, module: Any) -> None:
        nonlocal seen_layers
        for name, child in module.named_children():
            full = f"{prefix}{name}"
            if full == layers:
                seen_layers = True
            elif layers.startswith(full + "."):
                walk(full + ".", child)
            elif any(True for _ in child.parameters()) or any(True for _ in child.buffers()):
                (after if seen_layers and full != tied else before).append(full)

    walk("", skeleton)
    return layer_device_map(before, layers, num_layers, after, layout)
