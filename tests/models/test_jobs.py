"""llmserve/models/jobs.py: the event stream and the one-shot reply between the event loop and a worker
thread, and the equality rules of the messages that cross between them."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from llmserve.engine.base import ChatMessage, GenerationParams
from llmserve.errors import InternalError, InvalidRequest
from llmserve.models.jobs import (
    Event,
    EventStream,
    Failed,
    Finished,
    Generate,
    Reply,
    Started,
    TextDelta,
)


def in_thread(work: Callable[[], None]) -> None:
    """Runs `work` on another thread (the worker side) and waits for it to end."""
    thread = threading.Thread(target=work)
    thread.start()
    thread.join(10)
    assert not thread.is_alive()


async def collect(stream: EventStream) -> list[Event]:
    return [event async for event in stream.until_done()]


# -- EventStream --


def test_events_pushed_from_a_thread_arrive_in_order_until_finished() -> None:
    deltas = [TextDelta(str(i)) for i in range(200)]
    done = Finished("stop", 3, 200)

    async def main() -> list[Event]:
        stream = EventStream()

        def worker() -> None:
            stream.push(Started(3))
            for delta in deltas:
                stream.push(delta)
            stream.push(done)

        consumer = asyncio.create_task(collect(stream))
        await asyncio.sleep(0)  # the consumer awaits before anything is pushed
        await asyncio.to_thread(worker)
        return await asyncio.wait_for(consumer, 10)

    assert asyncio.run(main()) == [Started(3), *deltas, done]


def test_nothing_is_lost_when_the_worker_pushes_before_the_consumer_awaits() -> None:
    async def main() -> list[Event]:
        stream = EventStream()
        in_thread(
            lambda: [stream.push(e) for e in (Started(2, "hi"), TextDelta("a"), Finished("length", 2, 1))]
        )
        return await asyncio.wait_for(collect(stream), 10)

    assert asyncio.run(main()) == [Started(2, "hi"), TextDelta("a"), Finished("length", 2, 1)]


@pytest.mark.parametrize(
    "last", [Finished("stop", 1, 1), Failed(InternalError("the model crashed"))], ids=["finished", "failed"]
)
def test_until_done_ends_with_the_finished_or_failed_event(last: Finished | Failed) -> None:
    async def main() -> tuple[list[Event], Event]:
        stream = EventStream()
        in_thread(lambda: [stream.push(e) for e in (TextDelta("a"), last, TextDelta("after"))])
        events = await asyncio.wait_for(collect(stream), 10)
        return events, await asyncio.wait_for(stream.get(), 10)  # the stream itself is not closed

    events, after = asyncio.run(main())
    assert events == [TextDelta("a"), last]
    assert events[-1] is last  # the very error object, for the handler that reports it
    assert after == TextDelta("after")


def test_cancellation_is_seen_by_the_worker_and_later_pushes_are_dropped() -> None:
    async def main() -> tuple[list[bool], Event]:
        stream = EventStream()
        seen: list[bool] = []
        in_thread(lambda: (seen.append(stream.cancelled), stream.push(TextDelta("before"))))
        stream.cancel()
        in_thread(lambda: (seen.append(stream.cancelled), stream.push(TextDelta("after"))))
        first = await asyncio.wait_for(stream.get(), 10)
        with pytest.raises(TimeoutError):  # "after" never reaches the queue
            await asyncio.wait_for(stream.get(), 0.2)
        return seen, first

    seen, first = asyncio.run(main())
    assert seen == [False, True]
    assert first == TextDelta("before")  # what was pushed before the cancel is still there


def test_a_push_after_the_event_loop_is_gone_marks_the_stream_cancelled() -> None:
    async def make() -> EventStream:
        return EventStream()

    stream = asyncio.run(make())  # asyncio.run closes its loop
    assert not stream.cancelled
    in_thread(lambda: stream.push(TextDelta("nobody reads this")))  # no exception escapes to the worker
    assert stream.cancelled  # so the worker drops the sequence before its next step


def test_an_event_stream_needs_a_running_loop() -> None:
    with pytest.raises(RuntimeError, match="no running event loop"):
        EventStream()


# -- Reply --


def test_a_reply_set_from_a_thread_resolves_the_awaiting_coroutine() -> None:
    async def main() -> tuple[str, float]:
        reply: Reply[str] = Reply()
        start = time.monotonic()
        threading.Timer(0.05, reply.set, args=("loaded",)).start()
        value = await asyncio.wait_for(reply.future, 10)
        return value, time.monotonic() - start

    value, waited = asyncio.run(main())
    assert value == "loaded"
    assert waited < 5  # the loop was woken, not left to find the result by chance


def test_a_reply_resolves_on_the_event_loop_not_in_the_caller() -> None:
    async def main() -> list[bool]:
        reply: Reply[int] = Reply()
        states = [reply.future.done()]
        reply.set(7)  # call_soon_threadsafe: only scheduled
        states.append(reply.future.done())
        await asyncio.sleep(0)
        states.append(reply.future.done())
        assert reply.future.result() == 7
        return states

    assert asyncio.run(main()) == [False, False, True]


def test_a_failed_reply_raises_its_very_error_in_the_awaiting_coroutine() -> None:
    error = InvalidRequest("model 'm' is a chat model; embeddings need an Embedding model", param="model")

    async def main() -> None:
        reply: Reply[None] = Reply()
        in_thread(lambda: reply.fail(error))
        with pytest.raises(InvalidRequest) as raised:
            await asyncio.wait_for(reply.future, 10)
        assert raised.value is error

    asyncio.run(main())


def test_only_the_first_answer_counts_and_a_cancelled_waiter_is_no_error() -> None:
    async def main() -> tuple[int, list[dict[str, Any]]]:
        loop = asyncio.get_running_loop()
        errors: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _, context: errors.append(context))
        first: Reply[int] = Reply()
        in_thread(lambda: (first.set(1), first.set(2), first.fail(InternalError("late"))))
        value = await asyncio.wait_for(first.future, 10)
        gone: Reply[int] = Reply()
        gone.future.cancel()  # the awaiting request timed out or its client left
        in_thread(lambda: gone.set(3))
        await asyncio.sleep(0.05)
        return value, errors

    value, errors = asyncio.run(main())
    assert value == 1
    assert errors == []  # no InvalidStateError from resolving a done future


def test_a_reply_after_the_event_loop_is_gone_is_dropped_quietly() -> None:
    async def make() -> Reply[int]:
        return Reply()

    reply = asyncio.run(make())
    in_thread(lambda: (reply.set(1), reply.fail(InternalError("x"))))  # neither raises in the worker
    assert not reply.future.done()


# -- the messages --


def test_finished_equality_ignores_the_first_token_time() -> None:
    early = Finished("stop", 5, 3, first_token_at=1.0)
    late = Finished("stop", 5, 3, first_token_at=2.0)
    assert early == late
    assert hash(early) == hash(late)
    assert early == Finished("stop", 5, 3)
    assert late.first_token_at == 2.0  # kept, only not compared
    assert Finished("stop", 5, 3).first_token_at is None
    assert early != Finished("length", 5, 3)
    assert early != Finished("stop", 6, 3)
    assert early != Finished("stop", 5, 4)
    assert early != Finished("stop", 5, 3, stop_sequence="END")
    compared = [f.name for f in dataclasses.fields(Finished) if f.compare]
    assert compared == ["reason", "prompt_tokens", "completion_tokens", "stop_sequence"]


def test_started_and_text_delta_compare_every_field() -> None:
    assert Started(4) == Started(4, "")
    assert Started(4) != Started(4, "echo")
    assert Started(4) != Started(5)
    entry = {"token": "a", "logprob": -0.5, "bytes": [97], "top_logprobs": []}
    assert TextDelta("a") == TextDelta("a", ())
    assert TextDelta("a", (entry,)) == TextDelta("a", (dict(entry),))
    assert TextDelta("a", (entry,)) != TextDelta("a")
    assert TextDelta("a") != TextDelta("b")
    assert Started(0) != TextDelta("")  # different kinds never compare equal


def test_failed_compares_by_its_error_object() -> None:
    error = InternalError("the model crashed")
    assert Failed(error) == Failed(error)
    assert Failed(error) != Failed(InternalError("the model crashed"))  # exceptions compare by identity


@pytest.mark.parametrize(
    ("event", "name", "value"),
    [
        (Started(1), "echo", "x"),
        (TextDelta("a"), "text", "b"),
        (Finished("stop", 1, 1), "first_token_at", 1.0),
        (Failed(InternalError("x")), "error", None),
    ],
)
def test_events_are_frozen(event: Event, name: str, value: object) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(event, name, value)


def test_generate_defaults_and_its_queue_time() -> None:
    async def main() -> tuple[float, Generate, float]:
        before = time.monotonic()
        job = Generate((ChatMessage("user", "hi"),), GenerationParams(), EventStream())
        return before, job, time.monotonic()

    before, job, after = asyncio.run(main())
    assert (job.keep_alive, job.prompt, job.echo, job.tools) == (None, None, False, None)
    assert before <= job.queued_at <= after
