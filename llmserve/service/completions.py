"""POST /v1/completions (OpenAI's legacy API) without a transport: raw prompts, no chat template.

`prompt` is a string, a list of strings, a list of token ids or a list of such lists; each prompt gets
`n` choices, indexed prompt-major (prompt p, choice i → index p * n + i). `echo` puts the prompt before
the text; `logprobs` (0-5) reports tokens, their log probabilities, the alternatives and text offsets.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator
from dataclasses import replace
from typing import Any

from pydantic import Field

from llmserve.engine.base import GenerationParams
from llmserve.errors import InvalidRequest
from llmserve.models.jobs import EventStream, Failed, Finished, TextDelta
from llmserve.models.registry import ModelRegistry
from llmserve.protocol.openai_chat import SamplingRequest, Usage
from llmserve.service.chat import RequestStats, collect, merged, seeded, start_streams

Prompt = str | tuple[int, ...]
MAX_CHOICES = 128


class CompletionRequest(SamplingRequest):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(default=16, ge=0)  # OpenAI's default for this endpoint
    n: int = Field(default=1, ge=1, le=128)
    logprobs: int | None = Field(default=None, ge=0, le=5)
    echo: bool = False
    best_of: int | None = Field(default=None, ge=1)
    suffix: str | None = None
    user: str | None = None  # accepted, no effect

    def prompts(self) -> list[Prompt]:
        value = self.prompt
        if isinstance(value, str):
            items: list[Any] = [value]
        elif value and all(isinstance(v, int) for v in value):
            items = [tuple(value)]
        else:
            items = [v if isinstance(v, str | int) else tuple(v) for v in value]
        if not items or any(isinstance(i, int) for i in items):
            raise InvalidRequest(
                "'prompt' must be a string, strings, token ids or lists of them", param="prompt"
            )
        if any(not i for i in items):
            raise InvalidRequest("'prompt' must not be empty", param="prompt")
        return items

    def params(self) -> GenerationParams:
        if self.suffix:
            raise InvalidRequest("'suffix' (insertion) is not supported by llmserve's models", param="suffix")
        if self.best_of not in (None, 1, self.n):
            raise InvalidRequest("'best_of' other than n is not supported", param="best_of")
        if self.echo and self.logprobs is not None:
            raise InvalidRequest(
                "'echo' with 'logprobs' (prompt log probabilities) is not supported", param="echo"
            )
        self.check_stream_options()
        sampling = self.sampling()
        left_out = "max_tokens" not in self.model_fields_set  # OpenAI's 16, unless the model sets its own
        return replace(
            sampling,
            max_tokens=self.max_tokens or None,
            logprobs=self.logprobs,
            omitted=sampling.omitted | ({"max_tokens"} if left_out else set()),
        )


def legacy_logprobs(entries: list[dict[str, Any]], offset: int) -> dict[str, Any]:
    """The chat-style per-token entries in the legacy shape, text offsets starting at `offset`."""
    offsets = []
    for entry in entries:
        offsets.append(offset)
        offset += len(entry["token"])
    return {
        "tokens": [e["token"] for e in entries],
        "token_logprobs": [e["logprob"] for e in entries],
        "top_logprobs": [{t["token"]: t["logprob"] for t in e["top_logprobs"]} for e in entries],
        "text_offset": offsets,
    }


class CompletionService:
    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    async def start(
        self, request: CompletionRequest, stats: RequestStats
    ) -> tuple[str, list[tuple[str, EventStream]], int]:
        """Queues every choice and waits until each has started; returns the model's name, each
        choice's echo (the prompt's text with `echo`, else "") and stream, and the prompt tokens."""
        prompts, params = request.prompts(), request.params()
        if len(prompts) * request.n > MAX_CHOICES:
            raise InvalidRequest(f"at most {MAX_CHOICES} choices (prompts times n) per request", param="n")
        model, streams, started = await start_streams(
            len(prompts) * request.n,
            lambda k: self.registry.generate(
                request.model,
                (),
                seeded(params, k % request.n),
                prompt=prompts[k // request.n],
                echo=request.echo,
            ),
        )
        stats.model = model
        prompt_tokens = sum(s.prompt_tokens for s in started[:: request.n])  # each prompt once
        stats.prompt_tokens = prompt_tokens
        return (
            model,
            [(s.echo, stream) for s, stream in zip(started, streams, strict=True)],
            prompt_tokens,
        )

    async def complete(self, request: CompletionRequest, stats: RequestStats) -> dict[str, Any]:
        model, streams, prompt_tokens = await self.start(request, stats)
        try:
            results = await asyncio.gather(*(collect(stream) for _, stream in streams))
        finally:
            for _, stream in streams:
                stream.cancel()
        choices = []
        for index, ((echo, _), (text, entries, finished)) in enumerate(zip(streams, results, strict=True)):
            logprobs = None if request.logprobs is None else legacy_logprobs(entries, len(echo))
            choices.append(
                {"text": echo + text, "index": index, "logprobs": logprobs, "finish_reason": finished.reason}
            )
        generated = sum(f.completion_tokens for _, _, f in results)
        stats.completion_tokens = generated
        return {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
            "choices": choices,
            "usage": Usage.of(prompt_tokens, generated).model_dump(),
        }

    async def open_stream(
        self, request: CompletionRequest, stats: RequestStats
    ) -> AsyncGenerator[dict[str, Any], None]:
        model, streams, prompt_tokens = await self.start(request, stats)
        return _chunks(request, model, streams, prompt_tokens, stats)


async def _chunks(
    request: CompletionRequest,
    model: str,
    streams: list[tuple[str, EventStream]],
    prompt_tokens: int,
    stats: RequestStats,
) -> AsyncGenerator[dict[str, Any], None]:
    echoes = [echo for echo, _ in streams]
    chunk_id, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    include_usage = bool(request.stream_options and request.stream_options.include_usage)
    offsets = [len(e) for e in echoes]

    head = {"id": chunk_id, "object": "text_completion", "created": created, "model": model}
    usage = {"usage": None} if include_usage else {}

    def chunk(index: int, text: str, reason: str | None, logprobs: Any = None) -> dict[str, Any]:
        choice = {"text": text, "index": index, "logprobs": logprobs, "finish_reason": reason}
        return {**head, "choices": [choice], **usage}

    generated = 0
    try:
        for index, echo in enumerate(echoes):
            if echo:
                yield chunk(index, echo, None)
        async for index, event in merged([stream for _, stream in streams]):
            stats.observe(event)
            if isinstance(event, TextDelta):
                logprobs = None
                if request.logprobs is not None:
                    logprobs = legacy_logprobs(list(event.logprobs), offsets[index])
                offsets[index] += len(event.text)
                yield chunk(index, event.text, None, logprobs)
            elif isinstance(event, Failed):
                raise event.error
            elif isinstance(event, Finished):
                generated += event.completion_tokens
                yield chunk(index, "", event.reason)
        stats.completion_tokens = generated
        if include_usage:
            yield {**head, "choices": [], "usage": Usage.of(prompt_tokens, generated).model_dump()}
    finally:
        for _, stream in streams:
            stream.cancel()
