"""POST /v1/embeddings without a transport: the request's inputs → the model's worker (an `Embed`
message, answered between two decode steps by `sequences.embed_all`) → OpenAI's response."""

from __future__ import annotations

import base64
import struct
from typing import Any

from llmserve.config.keys import Tenant
from llmserve.errors import InvalidRequest
from llmserve.models.jobs import Embed, Reply
from llmserve.models.registry import ModelRegistry
from llmserve.models.usage import ANONYMOUS
from llmserve.protocol.embeddings import EmbeddingRequest

MAX_INPUTS = 2048  # OpenAI's limit on inputs per request


def _inputs(value: str | list[str] | list[int] | list[list[int]]) -> tuple[str | tuple[int, ...], ...]:
    if isinstance(value, str):
        items: list[Any] = [value]
    elif value and all(isinstance(v, int) for v in value):
        items = [tuple(value)]  # one input given as token ids
    else:
        items = [v if isinstance(v, str | int) else tuple(v) for v in value]
    if any(isinstance(i, int) for i in items):
        raise InvalidRequest("'input' mixes token ids with other inputs", param="input")
    if not items:
        raise InvalidRequest("'input' must not be empty", param="input")
    if len(items) > MAX_INPUTS:
        raise InvalidRequest(f"'input' holds {len(items)} items; at most {MAX_INPUTS}", param="input")
    for i, item in enumerate(items):
        if not item:
            raise InvalidRequest(f"input {i} is empty", param="input")
    return tuple(items)


def _encode(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "float":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")  # float32, as OpenAI


async def create_embeddings(
    registry: ModelRegistry, request: EmbeddingRequest, tenant: Tenant | None = None
) -> dict[str, Any]:
    """`tenant`: whose request it is (its model scope; its usage counts the input tokens)."""
    inputs = _inputs(request.input)
    worker = registry.admit(request.model, tenant)
    reply: Reply[tuple[list[list[float]], list[int]]] = Reply()
    worker.submit_embed(Embed(inputs, reply))
    vectors, tokens = await reply.future
    registry.usage.tokens([(ANONYMOUS if tenant is None else tenant.name, worker.unit_id, sum(tokens), 0)])
    if request.dimensions is not None and vectors and request.dimensions != len(vectors[0]):
        raise InvalidRequest(
            f"model '{worker.unit_id}' makes {len(vectors[0])}-dimensional embeddings and cannot shorten "
            f"them; 'dimensions' must be {len(vectors[0])} or left out",
            param="dimensions",
        )
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": _encode(v, request.encoding_format)}
            for i, v in enumerate(vectors)
        ],
        "model": worker.unit_id,
        "usage": {"prompt_tokens": sum(tokens), "total_tokens": sum(tokens)},
    }
