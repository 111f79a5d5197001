"""ChatSession's history and commands, with a scripted backend (no terminal, no model)."""

from __future__ import annotations

import _thread
import asyncio
import io
import threading
from collections.abc import AsyncIterator, Iterator, Sequence

import pytest

from llmserve.chat.backends import ChatError, Defaults, Settings, Turn
from llmserve.chat.repl import HELP, ChatSession, LoopThread

# the sampling defaults of the scripted models, as a server reports them; "x" is on a server that does
# not say (not llmserve)
DEFAULTS: dict[str, Defaults] = {
    "m": {
        "temperature": (0.2, "config"),
        "top_p": (0.9, "config"),
        "top_k": (0, "api"),
        "min_p": (0.0, "api"),
        "repetition_penalty": (1.1, "generation_config"),
        "max_tokens": (512, "config"),
    },
    "n": {
        "temperature": (1.0, "api"),
        "top_p": (1.0, "api"),
        "top_k": (20, "generation_config"),
        "min_p": (0.0, "api"),
        "repetition_penalty": (1.0, "api"),
        "max_tokens": (None, "api"),
    },
    "x": {},
}


class ScriptedBackend:
    def __init__(self, pieces: Sequence[str], delay: float = 0.0, fail: str | None = None) -> None:
        self.pieces = pieces
        self.delay = delay
        self.fail = fail
        self.seen: list[list[dict[str, str]]] = []
        self.settings: list[Settings] = []
        self.cancelled = False

    def describe(self) -> str:
        return "scripted"

    async def default_model(self) -> str:
        return "m"

    async def models(self) -> list[tuple[str, str]]:
        return [("m", "loaded"), ("n", "unloaded")]

    async def load(self, model: str) -> None:
        if model != "n":
            raise ChatError(f"The model '{model}' does not exist.")

    async def unload(self, model: str) -> None:
        return None

    async def sampling_defaults(self, model: str) -> Defaults:
        return DEFAULTS[model]

    async def stream(
        self, model: str, messages: Sequence[dict[str, str]], settings: Settings
    ) -> AsyncIterator[str]:
        self.seen.append(list(messages))
        self.settings.append(settings)
        if self.fail:
            raise ChatError(self.fail)
        try:
            for piece in self.pieces:
                await asyncio.sleep(self.delay)
                yield piece
        except asyncio.CancelledError:
            self.cancelled = True
            raise

    async def close(self) -> None:
        return None


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.stop()


def session(backend: ScriptedBackend, loop: LoopThread) -> tuple[ChatSession, io.StringIO]:
    out = io.StringIO()
    return ChatSession(backend, loop, "m", tty=False, out=out), out


def test_history_system_prompt_and_clear(loop: LoopThread) -> None:
    backend = ScriptedBackend(["Hel", "lo"])
    chat, out = session(backend, loop)
    chat.handle("/system Be brief.")
    chat.handle("hi")
    chat.handle("/temperature 0.5")
    chat.handle("again")
    assert backend.seen[1] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "again"},
    ]
    assert backend.settings[1].body() == {"temperature": 0.5}
    chat.handle("/clear")
    chat.handle("fresh")
    assert backend.seen[2] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "fresh"},
    ]
    assert out.getvalue().splitlines() == [
        "(system prompt set)",
        "Hello",
        "(temperature = 0.5)",
        "Hello",
        "(conversation cleared)",
        "Hello",
    ]


def test_ctrl_c_keeps_the_partial_answer_marked_and_cancels_the_stream(loop: LoopThread) -> None:
    backend = ScriptedBackend([f"{i} " for i in range(100)], delay=0.02)
    chat, out = session(backend, loop)
    timer = threading.Timer(0.3, _thread.interrupt_main)
    timer.start()
    chat.handle("count")
    timer.join()
    [user, partial] = chat.conversation.turns
    assert user == Turn("user", "count")
    assert partial.interrupted and partial.role == "assistant"
    assert 0 < len(partial.content.split()) < 100
    assert out.getvalue() == partial.content + " [interrupted]\n"
    deadline = threading.Event()
    for _ in range(100):
        if backend.cancelled:
            break
        deadline.wait(0.01)
    assert backend.cancelled


def test_a_failed_answer_leaves_no_trace_in_the_history(
    loop: LoopThread, capsys: pytest.CaptureFixture[str]
) -> None:
    backend = ScriptedBackend([], fail="lost the connection")
    chat, _ = session(backend, loop)
    chat.handle("hi")
    assert chat.conversation.turns == []
    assert capsys.readouterr().err == "error: lost the connection\n"


def test_model_commands(loop: LoopThread, capsys: pytest.CaptureFixture[str]) -> None:
    chat, out = session(ScriptedBackend(["x"]), loop)
    chat.handle("/model zzz")
    assert chat.model == "m"
    assert capsys.readouterr().err == "error: The model 'zzz' does not exist. (staying on m)\n"
    chat.handle("/model n")
    chat.handle("/models")
    chat.handle("/unload n")
    chat.handle("/model")
    chat.handle("/top_k -1")
    chat.handle("/max_tokens 0")
    chat.handle("/top_k 40")
    assert chat.model == "n"
    assert out.getvalue().splitlines() == [
        "(now chatting with n)",
        "  m  [loaded]",
        "* n  [unloaded]",
        "(n unloaded)",
        "usage: /model ID (/models lists the ids)",
        "/top_k takes a whole number, 0 or more (0 is off); it stays the model's default, 20",
        "/max_tokens takes a whole number, 1 or more; it stays the model's default, no cap",
        "(top_k = 40)",
    ]
    assert chat.handle("/exit") is False


SETTINGS_M = [
    "settings for m (/NAME VALUE sets one for this chat, /NAME default resets it):",
    "  temperature         0.2     model default (config)",
    "  top_p               0.9     model default (config)",
    "  top_k               0       model default (API)",
    "  min_p               0.0     model default (API)",
    "  repetition_penalty  1.1     model default (generation_config.json)",
    "  max_tokens          512     model default (config)",
]


def test_settings_show_the_defaults_in_force_and_commands_change_them(loop: LoopThread) -> None:
    backend = ScriptedBackend(["ok"])
    chat, out = session(backend, loop)
    chat.handle("/settings")
    chat.handle("hi")
    assert backend.settings[-1].body() == {}  # the model's defaults apply: the request leaves them out
    chat.handle("/temperature 0.7")
    chat.handle("/min_p 0.05")
    chat.handle("/repetition_penalty 0")
    chat.handle("/max_tokens 64")
    chat.handle("/max_tokens default")
    chat.handle("/top_p 2")
    chat.handle("/settings")
    chat.handle("hi")
    assert backend.settings[-1].body() == {"temperature": 0.7, "min_p": 0.05}
    assert out.getvalue().splitlines() == [
        *SETTINGS_M,
        "ok",
        "(temperature = 0.7)",
        "(min_p = 0.05)",
        "/repetition_penalty takes a number above 0, up to 10; it stays the model's default, 1.1",
        "(max_tokens = 64)",
        "(max_tokens = the model's default, 512)",
        "/top_p takes a number above 0, up to 1; it stays the model's default, 0.9",
        SETTINGS_M[0],
        "  temperature         0.7     set in this chat (model default 0.2, config)",
        *SETTINGS_M[2:4],
        "  min_p               0.05    set in this chat (model default 0.0, API)",
        *SETTINGS_M[5:],
        "ok",
    ]


def test_help_lists_the_commands_then_the_settings(loop: LoopThread) -> None:
    chat, out = session(ScriptedBackend([]), loop)
    chat.handle("/help")
    assert out.getvalue().splitlines() == [*HELP.splitlines(), *SETTINGS_M]
    assert "/settings" in HELP and "/repetition_penalty X" in HELP and "/NAME default" in HELP


def test_settings_of_a_server_that_does_not_say(loop: LoopThread) -> None:
    out = io.StringIO()
    chat = ChatSession(ScriptedBackend([]), loop, "x", tty=False, out=out)
    chat.handle("/top_k 5")
    chat.handle("/settings")
    chat.handle("/top_k default")
    assert out.getvalue().splitlines() == [
        "(top_k = 5)",
        "settings for x (/NAME VALUE sets one for this chat, /NAME default resets it):",
        "  temperature         -       the server's default",
        "  top_p               -       the server's default",
        "  top_k               5       set in this chat",
        "  min_p               -       the server's default",
        "  repetition_penalty  -       the server's default",
        "  max_tokens          -       the server's default",
        "(top_k = the server's default)",
    ]
