"""Which engine runs a model: `"engine": "auto" | "llama.cpp" | "transformers"` on a GGUF entry.

`auto` is llama.cpp when llama-cpp-python is installed (`pip install 'llmserve[llamacpp]'`) and the
entry asks for nothing only the transformers engine does (a `dtype`, `unload_mode: offload`, layers
placed by device name); else transformers. Every other kind of entry runs on transformers.
"""

from __future__ import annotations

import importlib.util
from typing import Literal

from llmserve.errors import ConfigError

EngineChoice = Literal["auto", "llama.cpp", "transformers"]
EngineName = Literal["llama.cpp", "transformers"]
LLAMA_CPP_INSTALL = "pip install 'llmserve[llamacpp]'"


def llama_cpp_installed() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def transformers_only(
    dtype: str, unload_mode: str, device_layers: int | str | list[str] | None, max_batch_size: int | None
) -> str | None:
    """The first option of an entry that only the transformers engine honours, as the message names it."""
    if dtype != "auto":
        return f'"dtype": "{dtype}" (llama.cpp computes in the file\'s own types)'
    if unload_mode == "offload":
        return '"unload_mode": "offload" (llama.cpp maps the file, there is nothing to park)'
    if device_layers is not None and not isinstance(device_layers, int):
        return '"num_device_layers" by device (llama.cpp takes a count of layers for the GPU)'
    if max_batch_size is not None and max_batch_size > MAX_SEQUENCES:
        return f'"max_batch_size": {max_batch_size} (llama.cpp runs at most {MAX_SEQUENCES} sequences)'
    return None


MAX_SEQUENCES = 256  # llama.cpp's LLAMA_MAX_SEQ


def resolve_engine(
    choice: EngineChoice, gguf: bool, kind: str, conflict: str | None, where: str
) -> EngineName:
    """The engine an entry runs on; raises `ConfigError` (naming `where`) for a choice that cannot be."""
    if not gguf:
        if choice == "llama.cpp":
            raise ConfigError(
                f"{where}.engine: llama.cpp runs GGUF files; a {kind} entry runs on transformers"
            )
        return "transformers"
    if choice == "transformers":
        return "transformers"
    installed = llama_cpp_installed()
    if choice == "llama.cpp":
        if not installed:
            raise ConfigError(f"{where}.engine: llama-cpp-python is not installed ({LLAMA_CPP_INSTALL})")
        if conflict is not None:
            raise ConfigError(f"{where}.engine: llama.cpp cannot honour {conflict}")
        return "llama.cpp"
    return "llama.cpp" if installed and conflict is None else "transformers"
