"""Where the terminal chat sends its messages: the models in this process, or a server over HTTP.

Both backends are async and live on the chat's event loop thread. Every problem a user should read
is a `ChatError` with a one-line message.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from llmserve.config.sampling import FIELDS, Value
from llmserve.errors import LLMServeError
from llmserve.models.registry import ModelRegistry
from llmserve.protocol.base import parse_request
from llmserve.protocol.openai_chat import ChatCompletionRequest
from llmserve.service.chat import ChatService

# A model's sampling defaults as its server reports them: field -> (value, where it comes from:
# "config", "generation_config" or "api"); empty when the server does not say (not llmserve).
Defaults = dict[str, tuple[Value, str]]


class ChatError(Exception):
    """Something to tell the user in one line; the chat goes on."""


@dataclass
class Settings:
    """Sampling settings the user changed with commands; None means the model's default (the request
    leaves the field out). The fields are sampling_defaults.FIELDS, in that order."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    max_tokens: int | None = None

    def body(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class Turn:
    role: str
    content: str
    interrupted: bool = False


@dataclass
class Conversation:
    system: str | None = None
    turns: list[Turn] = field(default_factory=list)

    def messages(self) -> list[dict[str, str]]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + [{"role": t.role, "content": t.content} for t in self.turns]


class Backend(Protocol):
    def describe(self) -> str: ...

    async def default_model(self) -> str: ...

    async def models(self) -> list[tuple[str, str]]:
        """(id, status) of every model."""
        ...

    async def load(self, model: str) -> None: ...

    async def unload(self, model: str) -> None: ...

    async def sampling_defaults(self, model: str) -> Defaults:
        """What the model uses for each sampling field a request leaves out."""
        ...

    def stream(
        self, model: str, messages: Sequence[dict[str, str]], settings: Settings
    ) -> AsyncIterator[str]:
        """The answer's text pieces as they are generated."""
        ...

    async def close(self) -> None: ...


class InProcessBackend:
    """The registry of this process: no HTTP server, models load in their worker threads."""

    def __init__(self, registry: ModelRegistry) -> None:
        self._registry = registry
        self._service = ChatService(registry)

    def describe(self) -> str:
        return "in process"

    async def default_model(self) -> str:
        return self._registry.default_id

    async def models(self) -> list[tuple[str, str]]:
        return [(s.unit_id, s.api_status) for s in self._registry.statuses()]

    async def load(self, model: str) -> None:
        try:
            await self._registry.reload(model)
        except LLMServeError as exc:
            raise ChatError(exc.message) from None

    async def unload(self, model: str) -> None:
        try:
            await self._registry.unload(model)
        except LLMServeError as exc:
            raise ChatError(exc.message) from None

    async def sampling_defaults(self, model: str) -> Defaults:
        try:
            found = self._registry.status(model).sampling
        except LLMServeError as exc:
            raise ChatError(exc.message) from None
        return {name: (found.values[name], found.sources[name]) for name in FIELDS}

    async def stream(
        self, model: str, messages: Sequence[dict[str, str]], settings: Settings
    ) -> AsyncIterator[str]:
        body = {"model": model, "messages": list(messages), "stream": True, **settings.body()}
        try:
            request = parse_request(ChatCompletionRequest, body)
            chunks = await self._service.open_stream(request)
            try:
                async for chunk in chunks:
                    for choice in chunk["choices"]:
                        if choice["delta"].get("content"):
                            yield choice["delta"]["content"]
            finally:
                await chunks.aclose()
        except LLMServeError as exc:
            raise ChatError(exc.message) from None

    async def close(self) -> None:
        return None


def _error_message(response: httpx.Response) -> str:
    try:
        error = response.json()["error"]
        return str(error["message"] if isinstance(error, dict) else error)
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text[:200]}"


class HTTPBackend:
    """Any OpenAI-compatible server; unload and load use llmserve's own /v1/models routes."""

    def __init__(self, url: str, api_key: str | None = None) -> None:
        self._url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(
            base_url=self._url, headers=headers, timeout=httpx.Timeout(600, connect=5)
        )

    def describe(self) -> str:
        return self._url

    async def _send(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, optional_route: bool = False
    ) -> httpx.Response:
        """`optional_route`: a server without this route (not llmserve) is no error."""
        try:
            response = await self._http.request(method, path, json=body)
        except httpx.TransportError as exc:
            raise ChatError(f"cannot reach {self._url} ({type(exc).__name__})") from None
        if optional_route and response.status_code in (404, 405) and "model_not_found" not in response.text:
            return response
        if response.status_code >= 400:
            raise ChatError(_error_message(response))
        return response

    async def _cards(self) -> list[dict[str, Any]]:
        data = (await self._send("GET", "/v1/models")).json().get("data", [])
        return [card for card in data if isinstance(card, dict) and "id" in card]

    async def default_model(self) -> str:
        """llmserve's `default` alias where the server has one, else the first model listed."""
        ids = [str(card["id"]) for card in await self._cards()]
        return "default" if "default" in ids or not ids else ids[0]

    async def models(self) -> list[tuple[str, str]]:
        cards = await self._cards()
        return [(str(c["id"]), str(c.get("status", "-"))) for c in cards if c["id"] != "default"]

    async def load(self, model: str) -> None:
        # A server that is not llmserve loads its models its own way.
        await self._send("POST", "/v1/models/reload", {"model_id": model}, optional_route=True)

    async def unload(self, model: str) -> None:
        await self._send("POST", "/v1/models/unload", {"model_id": model})

    async def sampling_defaults(self, model: str) -> Defaults:
        """From the model's card (`GET /v1/models/{id}`); a server that is not llmserve says nothing."""
        response = await self._send("GET", f"/v1/models/{quote(model, safe='/@')}", optional_route=True)
        try:
            card = response.json() if response.status_code == 200 else {}
        except ValueError:
            card = {}
        values = card.get("sampling_defaults") if isinstance(card, dict) else None
        if not isinstance(values, dict):
            return {}
        sources = card.get("sampling_sources")
        sources = sources if isinstance(sources, dict) else {}
        return {name: (values[name], str(sources.get(name, "server"))) for name in FIELDS if name in values}

    async def stream(
        self, model: str, messages: Sequence[dict[str, str]], settings: Settings
    ) -> AsyncIterator[str]:
        body = {"model": model, "messages": list(messages), "stream": True, **settings.body()}
        try:
            async with self._http.stream("POST", "/v1/chat/completions", json=body) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise ChatError(_error_message(response))
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    chunk = json.loads(data)
                    if "error" in chunk:
                        raise ChatError(str(chunk["error"].get("message", chunk["error"])))
                    for choice in chunk.get("choices", []):
                        if choice.get("delta", {}).get("content"):
                            yield choice["delta"]["content"]
        except httpx.TransportError as exc:
            what = "cannot reach" if isinstance(exc, httpx.ConnectError) else "lost the connection to"
            raise ChatError(f"{what} {self._url} ({type(exc).__name__})") from None

    async def close(self) -> None:
        await self._http.aclose()
