"""The Open Inference Protocol (V2) without a transport: metadata, readiness and the model repository
over the registry, and text generation (generate, generate_stream, infer) on a chat model, which
answers the text as the user's message through its chat template. Parameters left out get the model's
sampling defaults, as on /v1; an unloaded model is loaded first, as on /v1."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import Any

from llmserve import __version__
from llmserve.config.runtime import RuntimeModels
from llmserve.engine.base import ChatMessage, GenerationParams
from llmserve.errors import Forbidden, InvalidRequest, LLMServeError, ModelLoadFailed, Overloaded
from llmserve.models.jobs import EventStream, Failed, Finished, TextDelta
from llmserve.models.registry import ModelRegistry
from llmserve.models.status import ModelState, ModelStatus
from llmserve.protocol.v2 import (
    EXTENSIONS,
    PLATFORM,
    TEXT_IN,
    TEXT_OUT,
    IndexEntry,
    LoadRequest,
    ReadyState,
    TextParameters,
    TextRequest,
)
from llmserve.service.streams import RequestStats, collect, start_streams

_READY_STATE: dict[ModelState, ReadyState] = {
    ModelState.LOADED: "READY",
    ModelState.LOADING: "LOADING",
    ModelState.UNLOADING: "UNLOADING",
    ModelState.UNLOADED: "UNAVAILABLE",
    ModelState.FAILED: "UNAVAILABLE",
}
# what the request leaves out gets the model's default (min_p and repetition_penalty always)
_DEFAULTED = ("max_tokens", "temperature", "top_p", "top_k", "min_p", "repetition_penalty")


def generation_params(parameters: TextParameters) -> GenerationParams:
    return GenerationParams(
        max_tokens=parameters.max_tokens,
        temperature=parameters.temperature,
        top_p=parameters.top_p,
        top_k=parameters.top_k,
        seed=parameters.seed,
        stop=parameters.stop,
        omitted=frozenset(name for name in _DEFAULTED if name not in parameters.given),
    )


def index_entry(status: ModelStatus) -> IndexEntry:
    state = status.state
    reason = ""
    if state is ModelState.UNLOADED:
        reason = "unloaded"
    elif state is ModelState.FAILED:
        reason = status.last_error or "failed"
    return {
        "name": status.api_id,
        "version": status.version_label,
        "state": _READY_STATE[state],
        "reason": reason,
    }


def server_metadata() -> dict[str, Any]:
    return {"name": "llmserve", "version": __version__, "extensions": list(EXTENSIONS)}


class V2Service:
    def __init__(self, registry: ModelRegistry, runtime: RuntimeModels) -> None:
        self.registry = registry
        self.runtime = runtime

    def ready(self) -> bool:
        """Ready when the server takes requests: models load on demand, so unloaded ones do not count."""
        return not self.registry.draining

    def model(self, name: str, version: str | None = None) -> ModelStatus:
        """The model `name` at `version`, else its default version; 404 when either is unknown."""
        return self.registry.version(name, version)

    def metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        status = self.model(name, version)
        if version is None:
            versions = [s.version_label for s in self.registry.versions(status.api_id)]
        else:
            versions = [status.version_label]
        return {
            "name": status.api_id,
            "versions": versions,
            "platform": PLATFORM,
            "inputs": [TEXT_IN],
            "outputs": [TEXT_OUT],
        }

    def index(
        self, only_ready: bool, visible: Callable[[ModelStatus], bool] = lambda s: True
    ) -> list[IndexEntry]:
        """Every model version (`visible`: those a tenant may use), or only the ready ones."""
        entries = [index_entry(s) for s in self.registry.statuses() if visible(s)]
        return [e for e in entries if e["state"] == "READY" or not only_ready]

    async def load(self, name: str, request: LoadRequest) -> None:
        """Loads the model's default version (a loaded one is loaded anew). With a config, registers or
        replaces the model first (needs --allow-runtime-models). A failed load is a 400, as in Triton."""
        if request.registers:
            if not self.runtime.allowed:
                raise Forbidden("registering models at run time needs --allow-runtime-models")
            status = await self.registry.register(self.runtime.model(name, request.config))
        else:
            status = self.model(name)
            if status.state is ModelState.LOADED:
                await self.registry.unload(status.unit_id)
        try:
            await self.registry.load_unit(status.unit_id)
        except (ModelLoadFailed, Overloaded) as exc:
            raise InvalidRequest(f"failed to load '{name}': {exc.message}") from None

    async def unload(self, api_id: str) -> None:
        """Unloads every version of the model (running requests finish first)."""
        await self.registry.unload_versions(api_id)

    async def _start(self, status: ModelStatus, request: TextRequest, stats: RequestStats) -> EventStream:
        stats.model = status.unit_id
        params = generation_params(request.parameters)
        message = [ChatMessage("user", request.text)]
        _, streams, started = await start_streams(
            1, lambda _: self.registry.generate(status.unit_id, message, params, tenant=stats.tenant)
        )
        stats.observe(started[0])
        return streams[0]

    async def generate(self, status: ModelStatus, request: TextRequest, stats: RequestStats) -> str:
        """The whole answer."""
        stream = await self._start(status, request, stats)
        try:
            text, _, _ = await collect(stream, stats)
        finally:
            stream.cancel()
        return text

    async def infer(self, status: ModelStatus, request: TextRequest, stats: RequestStats) -> dict[str, Any]:
        """KServe's inference answer: the BYTES tensor `text_output`, with the request's `id`."""
        text = await self.generate(status, request, stats)
        answer: dict[str, Any] = names(status)
        if request.id is not None:
            answer["id"] = request.id
        output = {**TEXT_OUT, "data": [text]}
        return {**answer, "outputs": [output]}

    async def open_stream(
        self, status: ModelStatus, request: TextRequest, stats: RequestStats
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Once generation has started (load and prompt errors are raised here): one
        `{"model_name", "model_version", "text_output"}` per piece of text, the last with
        `finish_reason`; an error after the start is an `{"error": ...}` event that ends it."""
        stream = await self._start(status, request, stats)
        return _pieces(status, stream, stats)


def names(status: ModelStatus) -> dict[str, str]:
    return {"model_name": status.api_id, "model_version": status.version_label}


async def _pieces(
    status: ModelStatus, stream: EventStream, stats: RequestStats
) -> AsyncGenerator[dict[str, Any], None]:
    try:
        async for event in stream.until_done():
            stats.observe(event)
            if isinstance(event, TextDelta):
                yield {**names(status), "text_output": event.text}
            elif isinstance(event, Finished):
                yield {**names(status), "text_output": "", "finish_reason": event.reason}
            elif isinstance(event, Failed):
                yield {"error": event.error.message}
    except LLMServeError as exc:
        yield {"error": exc.message}
    finally:
        stream.cancel()
