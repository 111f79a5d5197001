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

from llmserve.engine.base import GenerationParams
from llmserve.errors import InvalidRequest
from llmserve.models.jobs import EventStream, Failed, Finished, TextDelta
from llmserve.models.registry import ModelRegistry
from llmserve.protocol.openai_completions import CompletionRequest
from llmserve.protocol.openai_generation import Usage
from llmserve.service.sampling import sampling_params
from llmserve.service.streams import RequestStats, collect, merged, seeded, start_streams

MAX_CHOICES = 128


def completion_params(request: CompletionRequest) -> GenerationParams:
    """The generation parameters of a completions request; the options llmserve does not support are
    a 400 here."""
    if request.suffix:
        raise InvalidRequest("'suffix' (insertion) is not supported by llmserve's models", param="suffix")
    if request.best_of not in (None, 1, request.n):
        raise InvalidRequest("'best_of' other than n is not supported", param="best_of")
    if request.echo and request.logprobs is not None:
        raise InvalidRequest(
            "'echo' with 'logprobs' (prompt log probabilities) is not supported", param="echo"
        )
    request.check_stream_options()
    sampling = sampling_params(request)
    left_out = "max_tokens" not in request.model_fields_set  # OpenAI's 16, unless the model sets its own
    return replace(
        sampling,
        max_tokens=request.max_tokens or None,
        logprobs=request.logprobs,
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
        prompts, params = request.prompts(), completion_params(request)
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
                tenant=stats.tenant,
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
