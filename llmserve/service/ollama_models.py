"""Ollama's model listing and embeddings: `/api/tags`, `/api/ps`, `/api/show`, `/api/embed`,
`/api/embeddings`, from the registry's `ModelStatus` snapshots and the embeddings service."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

from llmserve.config.keys import Tenant
from llmserve.models.registry import ModelRegistry
from llmserve.models.status import ModelStatus
from llmserve.protocol.embeddings import EmbeddingRequest
from llmserve.protocol.ollama import EmbeddingsRequest, EmbedRequest
from llmserve.service.embeddings import create_embeddings
from llmserve.service.ollama import NS
from llmserve.service.ollama_requests import created_at, model_name

# The Ollama release whose API llmserve follows: clients check it (VS Code's Copilot asks for >= 0.6.4).
OLLAMA_API_VERSION = "0.13.0"
_STARTED = time.time()
_NEVER = 2**63 / 1e9  # seconds: Go's longest time.Duration, Ollama's expiry of a model kept forever


def _digest(status: ModelStatus) -> str:
    return hashlib.sha256(status.unit_id.encode()).hexdigest()


def _details(status: ModelStatus) -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": "gguf" if status.kind == "GGUF" else "safetensors",
        "family": "",
        "families": [],
        "parameter_size": "",
        "quantization_level": status.quant_mode or "",
    }


def capabilities(status: ModelStatus) -> list[str]:
    if status.kind == "Embedding":
        return ["embedding"]
    return (
        ["completion", "vision"] if status.kind == "VisionPlain" else ["completion", "tools"]
    )  # no tools yet


def _names(status: ModelStatus, default_unit: str | None) -> list[str]:
    """`ID:latest` for the version `ID` names; `ID:VERSION` for each version of a versioned model."""
    names = [f"{status.api_id}:latest"] if default_unit in (None, status.unit_id) else []
    if status.version is not None:
        names.append(f"{status.api_id}:{status.version}")
    return names


def _entry(name: str, status: ModelStatus) -> dict[str, Any]:
    return {
        "name": name,
        "model": name,
        "modified_at": created_at(_STARTED),
        "size": status.memory_bytes or 0,
        "digest": _digest(status),
        "details": _details(status),
    }


Visible = Callable[[ModelStatus], bool]  # the models a tenant's key may use


def _all(status: ModelStatus) -> bool:
    return True


def tags(registry: ModelRegistry, visible: Visible = _all) -> dict[str, Any]:
    models: list[dict[str, Any]] = []
    for api_id in registry.api_ids():
        default_unit = registry.default_unit(api_id)
        for status in filter(visible, registry.versions(api_id)):
            models.extend(_entry(name, status) for name in _names(status, default_unit))
    return {"models": models}


def running(registry: ModelRegistry, visible: Visible = _all) -> dict[str, Any]:
    """The models in memory, with their size and when keep_alive will unload them (null: never)."""
    models = []
    for status in registry.statuses():
        if not status.in_memory or not visible(status):
            continue
        name = f"{status.api_id}:{status.version}" if status.version else f"{status.api_id}:latest"
        # not planned (keep_alive -1, or busy): as Ollama, the far end of a Go duration from now
        expires = created_at(status.expires_at or time.time() + _NEVER)
        models.append(
            {
                **_entry(name, status),
                "expires_at": expires,
                "size_vram": 0,
                "context_length": status.context_length or 0,
            }
        )
    return {"models": models}


def show(registry: ModelRegistry, name: str) -> dict[str, Any]:
    status = registry.status(model_name(registry, name))
    values = status.sampling.values
    parameters = "\n".join(
        f"{ollama:<20}{values[ours]}"
        for ollama, ours in (
            ("temperature", "temperature"),
            ("top_p", "top_p"),
            ("top_k", "top_k"),
            ("min_p", "min_p"),
            ("repeat_penalty", "repetition_penalty"),
            ("num_predict", "max_tokens"),
        )
        if values.get(ours) is not None
    )
    info: dict[str, Any] = {"general.name": status.api_id, "llmserve.kind": status.kind}
    if status.context_length is not None:
        info["llmserve.context_length"] = status.context_length
    return {
        "parameters": parameters,
        "template": status.chat_template or "",  # known once the model is loaded
        "details": _details(status),
        "model_info": info,
        "capabilities": capabilities(status),
        "modified_at": created_at(_STARTED),
    }


async def embed(
    registry: ModelRegistry, request: EmbedRequest, tenant: Tenant | None = None
) -> dict[str, Any]:
    arrived = time.monotonic()
    name = model_name(registry, request.model)
    inputs = [request.input] if isinstance(request.input, str) else request.input
    answer = await create_embeddings(
        registry, EmbeddingRequest(model=name, input=inputs, dimensions=request.dimensions), tenant
    )
    total = int((time.monotonic() - arrived) * NS)
    return {
        "model": request.model,
        "embeddings": [item["embedding"] for item in answer["data"]],
        "total_duration": total,
        "load_duration": 0,
        "prompt_eval_count": answer["usage"]["prompt_tokens"],
    }


async def embeddings(
    registry: ModelRegistry, request: EmbeddingsRequest, tenant: Tenant | None = None
) -> dict[str, Any]:
    """The legacy endpoint: one prompt, one vector (an empty prompt: an empty vector, as Ollama)."""
    if not request.prompt:
        return {"embedding": []}
    name = model_name(registry, request.model)
    answer = await create_embeddings(registry, EmbeddingRequest(model=name, input=request.prompt), tenant)
    return {"embedding": answer["data"][0]["embedding"]}
