"""A request admitted to a model: its left-out sampling fields filled with the model's defaults, its
prompt encoded and checked against the context, its engine sequence started, and the text output that
turns its tokens into deltas; and one decode step of all the running requests of a model; and the
embedding requests, answered between two steps."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from llmserve.config.sampling import SamplingDefaults
from llmserve.engine.base import (
    Embedder,
    Engine,
    GenerationParams,
    LogprobSource,
    TextEncoder,
    TokenLogprob,
)
from llmserve.engine.decoding import OutputText
from llmserve.errors import ContextLengthExceeded, InvalidRequest, LLMServeError
from llmserve.models.jobs import Embed, Failed, Finished, Generate, TextDelta


@dataclass
class Running:
    """One admitted request: its engine sequence and its output so far."""

    job: Generate
    seq_id: int
    prompt_tokens: int
    output: OutputText
    logprobs: list[dict[str, Any]] = field(default_factory=list)  # of tokens whose text is held back
    echo: str = ""  # the prompt's text, when the job asked for it
    first_token_at: float | None = None  # time.monotonic() of its first generated token
    end: int = 0  # the most tokens its sequence may hold: prompt + max_tokens


def logprob_entry(engine: LogprobSource, found: TokenLogprob) -> dict[str, Any]:
    """OpenAI's shape of one token's log probability: token text, the bytes it adds to the output (the
    tokens of one character each carry their part of it), the alternatives."""

    def one(token_id: int, logprob: float) -> dict[str, Any]:
        raw = engine.token_bytes(token_id)
        return {"token": raw.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(raw)}

    return {**one(found.token_id, found.logprob), "top_logprobs": [one(i, lp) for i, lp in found.top]}


def fill_defaults(defaults: SamplingDefaults, params: GenerationParams) -> GenerationParams:
    """`params` with each field the request left out set to the model's default (fields whose
    default is the API's keep the endpoint's own value, e.g. /v1/completions' max_tokens 16)."""
    changes: dict[str, Any] = {
        name: defaults.values[name] for name in params.omitted if defaults.sources.get(name, "api") != "api"
    }
    return replace(params, **changes, omitted=frozenset())


def _prompt_ids(engine: Engine, job: Generate) -> list[int]:
    if job.prompt is None:
        return engine.encode_chat(job.messages, job.tools) if job.tools else engine.encode_chat(job.messages)
    if not isinstance(engine, TextEncoder):
        raise InvalidRequest("this model does not take raw prompts", param="prompt")
    if isinstance(job.prompt, str):
        return engine.encode_text(job.prompt)
    return list(job.prompt)


@dataclass(frozen=True)
class Prepared:
    """A request with its prompt encoded and checked, ready to start: `end` is the most tokens its
    sequence may come to hold (prompt + max_tokens, clamped to what the model holds)."""

    job: Generate
    prompt: list[int]
    max_tokens: int

    @property
    def end(self) -> int:
        return len(self.prompt) + self.max_tokens


def prepare(engine: Engine, job: Generate, unit_id: str, kv_tokens: int | None = None) -> Prepared:
    """Encodes `job`'s prompt; raises `InvalidRequest` when it leaves no room to generate, in the
    model's context or in its KV cache budget (`kv_tokens`: even with nothing else running)."""
    prompt = _prompt_ids(engine, job)
    holds = engine.context_length
    what = "in all"
    if kv_tokens is not None and kv_tokens < holds:
        holds, what = kv_tokens, "in its KV cache budget"
    room = holds - len(prompt)
    if room < 1:
        field = "messages" if job.prompt is None else "prompt"
        raise ContextLengthExceeded(
            f"the prompt is {len(prompt)} tokens; model '{unit_id}' holds {holds} tokens {what}, "
            f"so shorten the {field} by {1 - room} or more",
            param=field,
        )
    if job.params.logprobs is not None and not isinstance(engine, LogprobSource):
        raise InvalidRequest(f"model '{unit_id}' cannot report log probabilities", param="logprobs")
    return Prepared(job, prompt, min(job.params.max_tokens or room, room))


def begin(engine: Engine, job: Generate, unit_id: str, kv_tokens: int | None = None) -> Running:
    """Prepares `job` and starts it at once (see `prepare`)."""
    return start(engine, prepare(engine, job, unit_id, kv_tokens))


def start(engine: Engine, prepared: Prepared) -> Running:
    """Starts the prepared request's sequence on `engine`."""
    job, prompt = prepared.job, prepared.prompt
    seq_id = engine.start(prompt, job.params)
    echo = "" if not job.echo else job.prompt if isinstance(job.prompt, str) else engine.decode(prompt)
    output = OutputText(engine.decode, job.params.stop, prepared.max_tokens)
    return Running(job, seq_id, len(prompt), output, echo=echo, end=prepared.end)


Retire = Callable[[Generate, Finished | Failed | None], None]


def step_all(engine: Engine, running: list[Running], retire: Retire) -> list[Running]:
    """Drops the sequences whose client is gone, advances the others by one token, streams their text,
    and retires the finished ones. Returns those still running."""
    live = []
    for run in running:
        if run.job.stream.cancelled:
            engine.release(run.seq_id)
            retire(run.job, None)
        else:
            live.append(run)
    if not live:
        return live
    tokens = engine.step([run.seq_id for run in live])
    still: list[Running] = []
    now = time.monotonic()
    for run, token in zip(live, tokens, strict=True):
        if token is None:  # its prompt is still being read
            still.append(run)
            continue
        if run.first_token_at is None:
            run.first_token_at = now
        params = run.job.params
        ends = (engine.is_eos(token) and not params.ignore_eos) or token in params.stop_token_ids
        if params.logprobs is not None and isinstance(engine, LogprobSource):
            found = engine.take_logprobs(run.seq_id)
            if found is not None and not ends:
                run.logprobs.append(logprob_entry(engine, found))
        text, reason = run.output.on_token(token, ends)
        if text or (reason is not None and run.logprobs):
            run.job.stream.push(TextDelta(text, tuple(run.logprobs)))
            run.logprobs = []
        if reason is None:
            still.append(run)
            continue
        engine.release(run.seq_id)
        finished = Finished(
            reason,
            run.prompt_tokens,
            run.output.generated,
            run.first_token_at,
            run.output.stop_sequence,
        )
        retire(run.job, finished)
    return still


@dataclass
class Tally:
    """Tokens decoded so far (a live throughput figure)."""

    total: int = 0


def step_counted(engine: Engine, running: list[Running], retire: Retire, tally: Tally) -> list[Running]:
    """`step_all`, adding the tokens it decoded to `tally` before any finished request hears its end
    (a client that reads the count after its last event sees its own tokens in it)."""
    ended: list[tuple[Generate, Finished | Failed | None]] = []
    before = sum(run.output.generated for run in running)
    still = step_all(engine, running, lambda job, event: ended.append((job, event)))
    tally.total += sum(run.output.generated for run in running) - before
    for job, event in ended:
        retire(job, event)
    return still


def embed_all(engine: Engine | None, jobs: Sequence[Embed], unit_id: str) -> None:
    """Answers every waiting `Embed` with its vectors and token counts, or its error."""
    for job in jobs:
        try:
            if not isinstance(engine, Embedder):
                raise InvalidRequest(
                    f"model '{unit_id}' is a chat model; embeddings need an Embedding model", param="model"
                )
            inputs = [engine.tokenize(i) if isinstance(i, str) else list(i) for i in job.inputs]
            job.reply.set((engine.embed(inputs), [len(i) for i in inputs]))
        except LLMServeError as exc:
            job.reply.fail(exc)
        except Exception as exc:  # this request's problem: fail it alone, keep the model
            job.reply.fail(InvalidRequest(f"embedding failed: {type(exc).__name__}: {exc}", param="input"))
