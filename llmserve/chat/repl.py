"""The interactive terminal chat: a prompt, streamed answers, history, and slash commands.

The prompt runs on the main thread (so Ctrl-C lands there); the backend runs on an event loop in a
helper thread. Text pieces cross over through a queue and are printed as they arrive. When stdin is
not a terminal, each input line is one message (or command) and each answer is printed on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import queue
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TextIO, TypeVar

from llmserve.chat.backends import Backend, ChatError, Conversation, Defaults, Settings, Turn

T = TypeVar("T")
HELP = """Commands:
  /help              this list
  /exit              leave (also Ctrl-D)
  /clear             forget the conversation (the system prompt stays)
  /system TEXT       set the system prompt (/system alone removes it)
  /models            list the models with their status
  /model ID          switch to another model (loads it first)
  /unload ID         unload a model and free its memory
  /settings          the sampling settings in force, and where each comes from
  /temperature X     0 to 2, 0 is greedy   /top_p X               above 0, up to 1
  /top_k N           0 or more, 0 is off   /min_p X               0 to 1, 0 is off
  /max_tokens N      1 or more             /repetition_penalty X  above 0, up to 10, 1 is off
  /NAME default      back to the model's default (/temperature default...)
Ctrl-C stops an answer; at the prompt, twice (or Ctrl-D) leaves."""
SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


class LoopThread:
    """An asyncio event loop on a daemon thread; the main thread submits coroutines to it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="llmserve-chat-loop", daemon=True)
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        future = self.submit(coro)
        while True:  # a timed wait, so that Ctrl-C is delivered to the main thread at once
            try:
                return future.result(timeout=0.1)  # type: ignore[no-any-return]
            except TimeoutError:
                continue
            except KeyboardInterrupt:
                future.cancel()
                raise

    def stop(self) -> None:
        """Cancels what still runs, closes pending async generators, then ends the loop."""

        async def drain() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.loop.shutdown_asyncgens()

        with contextlib.suppress(Exception):
            self.submit(drain()).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self.loop.close()


def _number(text: str, kind: Callable[[str], T], low: float, high: float, low_open: bool = False) -> T:
    value = kind(text)
    number = float(value)  # type: ignore[arg-type]
    if number > high or number < low or (low_open and number == low):
        raise ValueError
    return value


_SETTINGS: dict[str, tuple[Callable[[str], Any], str]] = {  # in the order /settings lists them
    "temperature": (lambda t: _number(t, float, 0, 2), "a number from 0 to 2"),
    "top_p": (lambda t: _number(t, float, 0, 1, low_open=True), "a number above 0, up to 1"),
    "top_k": (lambda t: _number(t, int, 0, 1 << 30), "a whole number, 0 or more (0 is off)"),
    "min_p": (lambda t: _number(t, float, 0, 1), "a number from 0 to 1 (0 is off)"),
    "repetition_penalty": (lambda t: _number(t, float, 0, 10, low_open=True), "a number above 0, up to 10"),
    "max_tokens": (lambda t: _number(t, int, 1, 1 << 30), "a whole number, 1 or more"),
}
_SOURCES = {"config": "config", "generation_config": "generation_config.json", "api": "API"}


def _shown(value: Any) -> str:
    return "no cap" if value is None else str(value)


def settings_lines(settings: Settings, defaults: Defaults) -> list[str]:
    """One line per sampling setting: its value in force and where it comes from."""
    lines = []
    for name in _SETTINGS:
        mine, known = getattr(settings, name), defaults.get(name)
        source = "" if known is None else _SOURCES.get(known[1], known[1])
        if known is None:
            shown = f"{'-':<7} the server's default" if mine is None else f"{mine:<7} set in this chat"
        elif mine is None:
            shown = f"{_shown(known[0]):<7} model default ({source})"
        else:
            shown = f"{mine:<7} set in this chat (model default {_shown(known[0])}, {source})"
        lines.append(f"  {name:<19} {shown}")
    return lines


class ChatSession:
    def __init__(self, backend: Backend, loop: LoopThread, model: str, *, tty: bool, out: TextIO) -> None:
        self.backend = backend
        self.loop = loop
        self.model = model
        self.tty = tty
        self.out = out
        self.settings = Settings()
        self.conversation = Conversation()

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def error(self, text: str) -> None:
        print(f"error: {text}", file=sys.stderr if not self.tty else self.out, flush=True)

    # -- one line of input --
    def handle(self, line: str) -> bool:
        """Acts on one line; returns False when the chat should end."""
        line = line.strip()
        if not line:
            return True
        if not line.startswith("/"):
            self.ask(line)
            return True
        name, _, arg = line[1:].partition(" ")
        arg = arg.strip()
        if name in ("exit", "quit", "bye"):
            return False
        if name == "help":
            self.say(HELP)
            self.show_settings()
        elif name == "settings":
            self.show_settings()
        elif name == "clear":
            self.conversation.turns.clear()
            self.say("(conversation cleared)")
        elif name == "system":
            self.conversation.system = arg or None
            self.say("(system prompt set)" if arg else "(system prompt removed)")
        elif name == "models":
            self.list_models()
        elif name in ("model", "unload"):
            if not arg:
                self.say(f"usage: /{name} ID (/models lists the ids)")
            elif name == "model":
                self.switch(arg)
            else:
                self.unload(arg)
        elif name in _SETTINGS:
            self.set(name, arg)
        else:
            self.say(f"unknown command /{name}; /help lists the commands")
        return True

    def set(self, name: str, arg: str) -> None:
        parse, expected = _SETTINGS[name]
        if arg == "default":
            setattr(self.settings, name, None)
            self.say(f"({name} = {self._current(name)})")
            return
        try:
            value = parse(arg)
        except ValueError:
            self.say(f"/{name} takes {expected}; it stays {self._current(name)}")
            return
        setattr(self.settings, name, value)
        self.say(f"({name} = {value})")

    def _defaults(self) -> Defaults:
        return self.loop.run(self.backend.sampling_defaults(self.model))

    def _current(self, name: str) -> str:
        """The setting's value in force: this chat's, else the model's default."""
        mine = getattr(self.settings, name)
        if mine is not None:
            return str(mine)
        try:
            known = self._defaults().get(name)
        except ChatError:
            known = None
        return "the server's default" if known is None else f"the model's default, {_shown(known[0])}"

    def show_settings(self) -> None:
        try:
            defaults = self._defaults()
        except ChatError as exc:
            self.error(str(exc))
            defaults = {}
        self.say(f"settings for {self.model} (/NAME VALUE sets one for this chat, /NAME default resets it):")
        for line in settings_lines(self.settings, defaults):
            self.say(line)

    def list_models(self) -> None:
        try:
            models = self.loop.run(self.backend.models())
        except ChatError as exc:
            self.error(str(exc))
            return
        for model, status in models:
            marker = "*" if model == self.model else " "
            self.say(f"{marker} {model}  [{status}]")

    def switch(self, model: str) -> None:
        future = self.loop.submit(self.backend.load(model))
        frames = itertools.cycle(SPINNER)
        try:
            while not future.done():
                if self.tty:
                    print(f"\rloading {model} {next(frames)}", end="", file=self.out, flush=True)
                time.sleep(0.1)
        except KeyboardInterrupt:
            self.say(f"\r(still loading {model} in the background; staying on {self.model})")
            return
        if self.tty:
            print("\r\033[K", end="", file=self.out)
        try:
            future.result()
        except ChatError as exc:
            self.error(f"{exc} (staying on {self.model})")
            return
        self.model = model
        self.say(f"(now chatting with {model})")

    def unload(self, model: str) -> None:
        try:
            self.loop.run(self.backend.unload(model))
        except ChatError as exc:
            self.error(str(exc))
            return
        self.say(f"({model} unloaded)")

    # -- a message and its streamed answer --
    def ask(self, text: str) -> None:
        self.conversation.turns.append(Turn("user", text))
        pieces: queue.Queue[str | ChatError | None] = queue.Queue()
        messages = self.conversation.messages()

        async def pump() -> None:
            try:
                async for piece in self.backend.stream(self.model, messages, self.settings):
                    pieces.put(piece)
                pieces.put(None)
            except ChatError as exc:
                pieces.put(exc)
            except Exception as exc:  # keep the chat alive whatever happens
                pieces.put(ChatError(f"{type(exc).__name__}: {exc}"))

        future = self.loop.submit(pump())
        answer: list[str] = []
        try:
            while (item := pieces.get()) is not None:
                if isinstance(item, ChatError):
                    if answer:
                        self.say("")
                    self.error(str(item))
                    self.conversation.turns.pop()
                    return
                answer.append(item)
                print(item, end="", file=self.out, flush=True)
        except KeyboardInterrupt:
            future.cancel()
            self.say(" [interrupted]")
            self.conversation.turns.append(Turn("assistant", "".join(answer), interrupted=True))
            return
        self.say("")
        self.conversation.turns.append(Turn("assistant", "".join(answer)))


def _read_line(tty: bool) -> str:
    if tty:
        return input(">>> ")
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line


def run_chat(backend: Backend, *, model: str | None = None, on_exit: Callable[[], None] | None = None) -> int:
    """Runs the chat until /exit or Ctrl-D; returns the exit code."""
    tty = sys.stdin.isatty()
    if tty:
        import readline  # noqa: F401  (line editing and input history for input())
    loop = LoopThread()
    try:
        if model is None:
            try:
                model = loop.run(backend.default_model())
            except ChatError as exc:
                print(f"error: {exc}", file=sys.stderr)
                model = "default"
        session = ChatSession(backend, loop, model, tty=tty, out=sys.stdout)
        if tty:
            session.say(
                f"llmserve chat · {model} · {backend.describe()} · /help for commands, Ctrl-D to exit"
            )
        armed = False
        while True:
            try:
                line = _read_line(tty)
            except EOFError:
                if tty:
                    session.say("")
                return 0
            except KeyboardInterrupt:
                if armed:
                    session.say("")
                    return 0
                armed = True
                session.say("\n(press Ctrl-C again or Ctrl-D to exit)")
                continue
            armed = False
            if not session.handle(line):
                return 0
    finally:
        try:
            loop.run(backend.close())
        finally:
            if on_exit is not None:
                on_exit()
            loop.stop()
