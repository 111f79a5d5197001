"""Where a model's weights go and in which form: `num_device_layers` as an accelerate `device_map`,
`in_situ_quant` as a bitsandbytes config. Errors are `PlacementError`s whose text is the load's reason."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, BitsAndBytesConfig

from llmserve.model_options import DeviceLayers, QuantMode


class PlacementError(RuntimeError):
    """The placement asked for cannot be done on this machine or this model."""


def quantization_config(mode: QuantMode) -> BitsAndBytesConfig:
    """LLM.int8 for 8-bit names, nf4/fp4 (bfloat16 compute) for 4-bit ones."""
    if mode == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)  # type: ignore[no-untyped-call]
    return BitsAndBytesConfig(  # type: ignore[no-untyped-call]
        load_in_4bit=True, bnb_4bit_quant_type=mode, bnb_4bit_compute_dtype=torch.bfloat16
    )


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
