"""OpenAI's embeddings wire types: the request of POST /v1/embeddings. Imports nothing heavy; requests
parse with `protocol.base.parse_request`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from llmserve.protocol.base import RequestBody


class EmbeddingRequest(RequestBody):
    model: str | None = None
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None  # accepted, no effect
