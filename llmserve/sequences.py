"""A request admitted to a model: its prompt encoded and checked against the context, its engine
sequence started, and the text output that turns its tokens into deltas."""

from __future__ import annotations

from dataclasses import dataclass

from llmserve.decoding import OutputText
from llmserve.engine.base import Engine
from llmserve.errors import InvalidRequest
from llmserve.jobs import Generate


@dataclass
class Running:
    """One admitted request: its engine sequence and its output so far."""

    job: Generate
    seq_id: int
    prompt_tokens: int
    output: OutputText


def begin(engine: Engine, job: Generate, api_id: str) -> Running:
    """Starts `job` on `engine`; raises `InvalidRequest` when the prompt leaves no room to generate."""
    prompt = engine.encode_chat(job.messages)
    room = engine.context_length - len(prompt)
    if room < 1:
        raise InvalidRequest(
            f"the prompt is {len(prompt)} tokens; model '{api_id}' holds "
            f"{engine.context_length} tokens in all, so shorten the messages by {1 - room} or more",
            param="messages",
        )
    max_tokens = min(job.params.max_tokens or room, room)
    seq_id = engine.start(prompt, job.params)
    return Running(job, seq_id, len(prompt), OutputText(engine.decode, job.params.stop, max_tokens))
