"""llmserve/models/sequences.py: admitting a request (`begin`), one decode step of every running request
(`step_all`) and the embedding requests (`embed_all`), on scripted engines."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest
from fakes import EOS, ScriptedEngine

from llmserve.engine.base import ChatMessage, Engine, GenerationParams, TokenLogprob
from llmserve.errors import InternalError, InvalidRequest
from llmserve.models import sequences
from llmserve.models.jobs import Embed, Event, EventStream, Failed, Finished, Generate, Reply, TextDelta
from llmserve.models.sequences import Running, begin, embed_all, step_all

# -- scripted engines with the optional abilities --


class RawEngine(ScriptedEngine):
    """Takes raw prompts (TextEncoder): one token per word, the first piece's id for each."""

    def __init__(self, pieces: Sequence[str], **kwargs: Any) -> None:
        super().__init__(pieces, **kwargs)
        self.prompts: list[list[int]] = []
        self.tools: list[Any] = []

    def encode_text(self, text: str) -> list[int]:
        return [1] * len(text.split())

    def encode_chat(
        self, messages: Sequence[ChatMessage], tools: Sequence[dict[str, Any]] | None = None
    ) -> list[int]:
        self.tools.append(tools)
        return super().encode_chat(messages, tools)

    def start(self, prompt_ids: Sequence[int], params: GenerationParams) -> int:
        self.prompts.append(list(prompt_ids))
        return super().start(prompt_ids, params)


class BytesEngine(ScriptedEngine):
    """Its pieces are bytes, so a character can take several tokens (decoded with U+FFFD until whole)."""

    def __init__(self, pieces: Sequence[str | bytes], **kwargs: Any) -> None:
        super().__init__([""] * len(pieces), **kwargs)
        self.raw = [b"", *(p.encode() if isinstance(p, str) else p for p in pieces)]

    def decode(self, token_ids: Sequence[int]) -> str:
        return b"".join(self.raw[i] for i in token_ids if i != EOS).decode("utf-8", errors="replace")


class LogprobEngine(BytesEngine):
    """A LogprobSource: token t has log probability -t/4, its alternative is EOS at -8."""

    def __init__(self, pieces: Sequence[str | bytes], **kwargs: Any) -> None:
        super().__init__(pieces, **kwargs)
        self.last: dict[int, int] = {}
        self.asked: list[int] = []

    def step(self, seq_ids: Sequence[int]) -> list[int]:
        tokens = super().step(seq_ids)
        self.last.update(zip(seq_ids, tokens, strict=True))
        return tokens

    def token_bytes(self, token_id: int) -> bytes:
        return self.raw[token_id]

    def take_logprobs(self, seq_id: int) -> TokenLogprob | None:
        self.asked.append(seq_id)
        token = self.last[seq_id]
        return TokenLogprob(token, -token / 4, ((token, -token / 4), (EOS, -8.0)))


class EmbedEngine(ScriptedEngine):
    """An Embedder: a word is the token of its length; a vector is (token count, token sum)."""

    dimensions = 2

    def __init__(self, fail_with: Exception | None = None) -> None:
        super().__init__([])
        self.fail_with = fail_with
        self.batches: list[list[list[int]]] = []

    def tokenize(self, text: str) -> list[int]:
        return [len(word) for word in text.split()]

    def embed(self, inputs: Sequence[Sequence[int]]) -> list[list[float]]:
        self.batches.append([list(i) for i in inputs])
        if self.fail_with is not None and len(self.batches) == 1:
            raise self.fail_with
        return [[float(len(i)), float(sum(i))] for i in inputs]


def entry(engine: LogprobEngine, token: int) -> dict[str, Any]:
    """What LogprobEngine's token `token` becomes on the wire: its own bytes (part of a character's)."""
    raw = engine.raw[token]
    text = raw.decode("utf-8", errors="replace")
    top = [{"token": text, "logprob": -token / 4, "bytes": list(raw)}]
    top.append({"token": "", "logprob": -8.0, "bytes": []})
    return {"token": text, "logprob": -token / 4, "bytes": list(raw), "top_logprobs": top}


def chat(text: str = "hi", **params: Any) -> Generate:
    """A chat job (its stream needs the running loop); "hi" is 2 tokens on a ScriptedEngine."""
    return Generate((ChatMessage("user", text),), GenerationParams(**params), EventStream())


# -- begin --


async def _begin(engine: Engine, **fields: Any) -> Running:
    return begin(engine, replace(chat(), **fields), "m")


def started(engine: Engine, **fields: Any) -> Running:
    return asyncio.run(_begin(engine, **fields))


def refused(engine: Engine, **fields: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as raised:
        started(engine, **fields)
    return raised.value


def test_begin_starts_the_sequence_with_the_encoded_prompt() -> None:
    engine = RawEngine(["a"], context=10)
    params = GenerationParams(temperature=0.5, stop=("x",))
    run = started(engine, messages=(ChatMessage("user", "one two three"),), params=params)
    assert (run.seq_id, run.prompt_tokens, run.echo, run.first_token_at, run.logprobs) == (1, 4, "", None, [])
    assert engine.prompts == [[1, 1, 1, 1]]
    assert engine.params == [params]
    assert engine.tools == [None]  # no tools: the template is rendered without any
    assert run.output.generated == 0


def test_begin_offers_the_tools_to_the_chat_template() -> None:
    engine = RawEngine(["a"])
    tools = ({"type": "function", "function": {"name": "f"}},)
    started(engine, tools=tools)
    assert engine.tools == [tools]


@pytest.mark.parametrize(("words", "short_by"), [(3, 1), (5, 3)])
def test_a_prompt_that_fills_the_context_is_refused_before_it_starts(words: int, short_by: int) -> None:
    engine = ScriptedEngine(["a"], context=4)
    error = refused(engine, messages=(ChatMessage("user", " ".join(["w"] * words)),))
    assert (error.message, error.param) == (
        f"the prompt is {words + 1} tokens; model 'm' holds 4 tokens in all, "
        f"so shorten the messages by {short_by} or more",
        "messages",
    )
    assert engine.params == [] and engine.sequences == {}


def test_a_raw_prompt_that_fills_the_context_names_the_prompt() -> None:
    error = refused(RawEngine(["a"], context=4), prompt="w w w w")
    assert error.param == "prompt"
    assert error.message.endswith("so shorten the prompt by 1 or more")


def test_one_token_of_room_is_enough_and_max_tokens_is_clipped_to_it() -> None:
    run = started(ScriptedEngine(["a"], context=4), messages=(ChatMessage("user", "w w"),))
    assert (run.prompt_tokens, run.output.max_tokens) == (3, 1)


@pytest.mark.parametrize(("asked", "given"), [(None, 8), (100, 8), (8, 8), (3, 3), (1, 1)])
def test_max_tokens_is_clipped_to_the_room_left(asked: int | None, given: int) -> None:
    run = started(ScriptedEngine(["a"], context=10), params=GenerationParams(max_tokens=asked))
    assert run.output.max_tokens == given  # 10 tokens of context, 2 of prompt


def test_logprobs_are_refused_on_an_engine_that_cannot_report_them() -> None:
    engine = ScriptedEngine(["a"])
    error = refused(engine, params=GenerationParams(logprobs=0))
    assert (error.message, error.param) == ("model 'm' cannot report log probabilities", "logprobs")
    assert engine.params == []
    assert started(LogprobEngine(["a"]), params=GenerationParams(logprobs=0)).seq_id == 1


def test_a_prompt_too_long_is_reported_before_logprobs_refused() -> None:
    error = refused(ScriptedEngine(["a"], context=2), params=GenerationParams(logprobs=2))
    assert error.param == "messages"


def test_a_raw_prompt_needs_an_engine_that_encodes_text() -> None:
    engine = ScriptedEngine(["a"])
    error = refused(engine, prompt="hello")
    assert (error.message, error.param) == ("this model does not take raw prompts", "prompt")
    assert refused(engine, prompt=(1, 1)).param == "prompt"  # token ids too: the engine cannot take them


@pytest.mark.parametrize(
    ("fields", "prompt", "echo"),
    [
        ({"prompt": "say it  again"}, [1, 1, 1], "say it  again"),  # the text as sent, not re-decoded
        ({"prompt": (1, 2, 1)}, [1, 2, 1], "ABA"),
        ({}, [1, 1], "AA"),  # a chat: its rendered prompt
    ],
    ids=["text", "token-ids", "chat"],
)
def test_echo_gives_back_the_prompt_text(fields: dict[str, Any], prompt: list[int], echo: str) -> None:
    engine = RawEngine(["A", "B"])
    assert started(engine, **fields, echo=True).echo == echo
    assert started(engine, **fields).echo == ""
    assert engine.prompts == [prompt, prompt]


# -- step_all --


class Retired:
    """The worker's retire callback: records each call, and pushes the last event as the worker does."""

    def __init__(self) -> None:
        self.calls: list[tuple[Generate, Finished | Failed | None]] = []

    def __call__(self, job: Generate, event: Finished | Failed | None) -> None:
        self.calls.append((job, event))
        if event is not None:
            job.stream.push(event)


async def _generate(engine: Engine, jobs: Sequence[Generate], retire: Retired) -> list[list[Event]]:
    """Admits the jobs and steps them on a worker thread until none runs; each job's events."""
    running = [begin(engine, job, "m") for job in jobs]

    def worker() -> None:
        nonlocal running
        while running:
            running = step_all(engine, running, retire)

    await asyncio.to_thread(worker)
    ends = [job for job, event in retire.calls if event is not None]
    return [await asyncio.wait_for(_events(job.stream), 10) for job in ends]


async def _events(stream: EventStream) -> list[Event]:
    return [event async for event in stream.until_done()]


def generate(engine: Engine, *param_sets: dict[str, Any]) -> list[list[Event]]:
    """The events of one chat job ("hi": 2 prompt tokens) per parameter set, stepped together."""

    async def main() -> list[list[Event]]:
        return await _generate(engine, [chat(**p) for p in param_sets], Retired())

    return asyncio.run(main())


def test_text_streams_token_by_token_until_eos() -> None:
    engine = ScriptedEngine(["Hel", "lo", "!"])
    assert generate(engine, {}) == [
        [TextDelta("Hel"), TextDelta("lo"), TextDelta("!"), Finished("stop", 2, 4)]  # EOS counts
    ]
    assert engine.released == [1] and engine.sequences == {}


def test_ignore_eos_goes_on_to_max_tokens() -> None:
    events = generate(ScriptedEngine(["a", "b"]), {"ignore_eos": True, "max_tokens": 5})
    assert events == [[TextDelta("a"), TextDelta("b"), Finished("length", 2, 5)]]


def test_max_tokens_ends_with_length() -> None:
    assert generate(ScriptedEngine(["a", "b", "c"]), {"max_tokens": 2}) == [
        [TextDelta("a"), TextDelta("b"), Finished("length", 2, 2)]
    ]


def test_a_stop_token_id_ends_the_output_without_its_text() -> None:
    assert generate(ScriptedEngine(["a", "b", "c"]), {"stop_token_ids": (2,)}) == [
        [TextDelta("a"), Finished("stop", 2, 2)]
    ]


def test_a_stop_string_spanning_tokens_is_held_back_and_never_sent() -> None:
    engine = ScriptedEngine(["Hel", "lo E", "N", "D tail", "more"])
    assert generate(engine, {"stop": ("END",)}) == [
        [TextDelta("Hel"), TextDelta("lo "), Finished("stop", 2, 4, stop_sequence="END")]
    ]
    assert engine.released == [1]


def test_text_held_for_a_possible_stop_is_sent_when_it_is_not_one() -> None:
    events = generate(ScriptedEngine(["a E", "N", "X", " E"]), {"stop": ("END",)})
    assert events == [
        [TextDelta("a "), TextDelta("ENX"), TextDelta(" "), TextDelta("E"), Finished("stop", 2, 5)]
    ]  # the last "E" is held until the end of the output shows it is no stop


def test_text_held_for_a_possible_stop_is_sent_when_max_tokens_ends_it() -> None:
    events = generate(ScriptedEngine(["a", " E", "x"]), {"stop": ("END",), "max_tokens": 2})
    assert events == [[TextDelta("a"), TextDelta(" E"), Finished("length", 2, 2)]]


def test_a_character_split_over_tokens_is_sent_whole() -> None:
    engine = BytesEngine(["a", b"\xc3", b"\xa9", "b"])
    assert generate(engine, {}) == [[TextDelta("a"), TextDelta("é"), TextDelta("b"), Finished("stop", 2, 5)]]


def test_logprob_entries_ride_on_the_delta_that_carries_their_text() -> None:
    engine = LogprobEngine(["a", b"\xc3", b"\xa9", " E", "N", "X"])
    events = generate(engine, {"logprobs": 1, "stop": ("END",)})
    assert events == [
        [
            TextDelta("a", (entry(engine, 1),)),
            TextDelta("é", (entry(engine, 2), entry(engine, 3))),
            TextDelta(" ", (entry(engine, 4),)),
            TextDelta("ENX", (entry(engine, 5), entry(engine, 6))),
            Finished("stop", 2, 7),  # the EOS token has no entry: it is not part of the output
        ]
    ]
    assert engine.asked == [1] * 7
    first = events[0][0]
    assert isinstance(first, TextDelta) and first.logprobs == (
        {
            "token": "a",
            "logprob": -0.25,
            "bytes": [97],
            "top_logprobs": [
                {"token": "a", "logprob": -0.25, "bytes": [97]},
                {"token": "", "logprob": -8.0, "bytes": []},
            ],
        },
    )


def test_the_bytes_of_the_tokens_of_one_character_join_into_it() -> None:
    engine = LogprobEngine([b"\xc3", b"\xa9"])
    (events,) = generate(engine, {"logprobs": 0})
    delta = events[0]
    assert isinstance(delta, TextDelta) and delta.text == "é"
    assert [e["bytes"] for e in delta.logprobs] == [[0xC3], [0xA9]]


def test_the_logprobs_of_a_stop_string_come_in_an_empty_last_delta() -> None:
    engine = LogprobEngine(["a E", "N", "D"])
    events = generate(engine, {"logprobs": 0, "stop": ("END",)})
    assert events == [
        [
            TextDelta("a ", (entry(engine, 1),)),
            TextDelta("", (entry(engine, 2), entry(engine, 3))),
            Finished("stop", 2, 3, stop_sequence="END"),
        ]
    ]


def test_logprobs_are_taken_only_for_the_requests_that_asked() -> None:
    engine = LogprobEngine(["a", "b"])
    asked, plain = generate(engine, {"logprobs": 0}, {})
    assert plain == [TextDelta("a"), TextDelta("b"), Finished("stop", 2, 3)]
    assert asked == [TextDelta("a", (entry(engine, 1),)), TextDelta("b", (entry(engine, 2),)), plain[-1]]
    assert engine.asked == [1, 1, 1]  # never for sequence 2


def test_requests_step_together_and_each_finishes_on_its_own() -> None:
    engine = ScriptedEngine(["a", "b", "c"])
    assert generate(engine, {"max_tokens": 1}, {}, {"stop": ("b",)}) == [  # in the order they end
        [TextDelta("a"), Finished("length", 2, 1)],
        [TextDelta("a"), Finished("stop", 2, 2, stop_sequence="b")],
        [TextDelta("a"), TextDelta("b"), TextDelta("c"), Finished("stop", 2, 4)],
    ]
    assert engine.released == [1, 3, 2]
    assert engine.steps == 4


class Clock:
    """Stands in for the `time` module in sequences.py: 1.0 at the first call, 2.0 at the next..."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        self.now += 1.0
        return self.now


def test_first_token_at_is_stamped_on_the_first_step_even_without_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sequences, "time", Clock())
    retire = Retired()

    async def main() -> list[list[Event]]:
        return await _generate(BytesEngine([b"\xc3", b"\xa9", "!"]), [chat()], retire)

    (events,) = asyncio.run(main())
    assert events == [TextDelta("é"), TextDelta("!"), Finished("stop", 2, 4)]
    last = events[-1]
    assert isinstance(last, Finished) and last.first_token_at == 1.0  # the step that gave no text


def test_a_cancelled_request_releases_its_sequence_and_retires_silently() -> None:
    async def main() -> None:
        engine = ScriptedEngine(["a", "b", "c"])
        gone, stays = chat(), chat()
        running = [begin(engine, gone, "m"), begin(engine, stays, "m")]
        retire = Retired()
        running = step_all(engine, running, retire)
        assert engine.sequences == {1: 1, 2: 1}
        gone.stream.cancel()
        running = await asyncio.to_thread(step_all, engine, running, retire)
        assert [run.job for run in running] == [stays]
        assert retire.calls == [(gone, None)]
        assert engine.released == [1]
        assert engine.sequences == {2: 2}  # only the live one stepped
        stays.stream.cancel()
        assert step_all(engine, running, retire) == []
        assert retire.calls == [(gone, None), (stays, None)]
        assert (engine.released, engine.steps) == ([1, 2], 2)  # no step with nobody left
        assert await asyncio.wait_for(gone.stream.get(), 10) == TextDelta("a")  # pushed before the cancel

    asyncio.run(main())


def test_an_engine_crash_in_a_step_reaches_the_worker() -> None:
    async def main() -> None:
        engine = ScriptedEngine(["a"], fail_at_step=1)
        running = [begin(engine, chat(), "m")]
        with pytest.raises(RuntimeError, match="the model crashed"):
            step_all(engine, running, Retired())

    asyncio.run(main())


# -- embed_all --


async def _embed(engine: Engine | None, inputs: Sequence[tuple[str | tuple[int, ...], ...]]) -> list[Any]:
    jobs = [Embed(i, Reply()) for i in inputs]
    await asyncio.to_thread(embed_all, engine, jobs, "m")
    done = await asyncio.gather(
        *(asyncio.wait_for(job.reply.future, 10) for job in jobs), return_exceptions=True
    )
    return list(done)


def embed(engine: Engine | None, *inputs: tuple[str | tuple[int, ...], ...]) -> list[Any]:
    return asyncio.run(_embed(engine, inputs))


@pytest.mark.parametrize("engine", [ScriptedEngine(["a"]), None], ids=["chat-engine", "no-engine"])
def test_embeddings_on_a_chat_model_fail_every_job(engine: Engine | None) -> None:
    answers = embed(engine, ("a",), ("b", "c"))
    assert [(type(a), a.message, a.param) for a in answers] == [
        (InvalidRequest, "model 'm' is a chat model; embeddings need an Embedding model", "model")
    ] * 2


def test_each_job_gets_its_vectors_and_token_counts() -> None:
    engine = EmbedEngine()
    answers = embed(engine, ("one", "three four"), ((7, 7, 7),))
    assert answers == [([[1.0, 3.0], [2.0, 9.0]], [1, 2]), ([[3.0, 21.0]], [3])]
    assert engine.batches == [[[3], [5, 4]], [[7, 7, 7]]]  # one batch per job, token ids as given


def test_an_llmserve_error_in_embed_fails_that_job_alone_as_it_is() -> None:
    error = InvalidRequest("too long", param="input")
    answers = embed(EmbedEngine(fail_with=error), ("a",), ("bb",))
    assert answers[0] is error
    assert answers[1] == ([[1.0, 2.0]], [1])


def test_any_other_error_in_embed_becomes_an_invalid_request_on_that_job() -> None:
    answers = embed(EmbedEngine(fail_with=ValueError("no vectors today")), ("a",), ("bb",))
    failed = answers[0]
    assert isinstance(failed, InvalidRequest) and not isinstance(failed, InternalError)
    assert (failed.message, failed.param) == ("embedding failed: ValueError: no vectors today", "input")
    assert answers[1] == ([[1.0, 2.0]], [1])


def test_embed_all_answers_from_the_worker_thread_without_blocking_it() -> None:
    async def main() -> None:
        jobs = [Embed(("x",), Reply()), Embed(("yy",), Reply())]
        thread = threading.Thread(target=embed_all, args=(EmbedEngine(), jobs, "m"))
        thread.start()
        thread.join(10)  # returns although the loop has not run the answers yet
        assert not thread.is_alive()
        assert [await job.reply.future for job in jobs] == [([[1.0, 1.0]], [1]), ([[1.0, 2.0]], [1])]

    asyncio.run(main())
