"""Token ids → text deltas: incremental detokenization and stop strings. Engine-agnostic and pure."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from llmserve.engine.base import FinishReason


class IncrementalDetokenizer:
    """Turns one token at a time into text, holding back bytes that do not yet form a character.

    Decoding a window that starts a few tokens back (`prefix_offset`) keeps tokenizers that merge
    spaces or bytes across tokens right, without decoding the whole output at every step.
    """

    def __init__(self, decode: Callable[[Sequence[int]], str]) -> None:
        self._decode = decode
        self._ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0

    def add(self, token_id: int) -> str:
        self._ids.append(token_id)
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        full = self._decode(self._ids[self._prefix_offset :])
        if len(full) > len(prefix) and not full.endswith("\ufffd"):
            self._prefix_offset = self._read_offset
            self._read_offset = len(self._ids)
            return full[len(prefix) :]
        return ""

    def flush(self) -> str:
        """Whatever text is still held back at the end of the output."""
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        full = self._decode(self._ids[self._prefix_offset :])
        self._prefix_offset = self._read_offset = len(self._ids)
        return full[len(prefix) :] if len(full) > len(prefix) else ""


class StopMatcher:
    """Finds stop strings in streamed text. Text that could still begin a stop string is held back,
    so a stop string never reaches the client, even when it spans several tokens."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._longest = max((len(s) for s in self._stops), default=0)
        self._held = ""
        self.matched: str | None = None  # the stop string that ended the text, once one did

    def feed(self, text: str) -> tuple[str, bool]:
        """Returns (text safe to emit, whether a stop string was hit)."""
        if not self._stops:
            return text, False
        buffer = self._held + text
        hits = [(i, stop) for stop in self._stops if (i := buffer.find(stop)) >= 0]
        if hits:
            self._held = ""
            at, self.matched = min(hits, key=lambda hit: hit[0])
            return buffer[:at], True
        keep = self._partial_suffix(buffer)
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep], False

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held

    def _partial_suffix(self, buffer: str) -> int:
        """Length of the longest end of `buffer` that is a proper prefix of some stop string."""
        for size in range(min(len(buffer), self._longest - 1), 0, -1):
            tail = buffer[-size:]
            if any(stop.startswith(tail) for stop in self._stops):
                return size
        return 0


class OutputText:
    """One sequence's output: token ids in, text deltas out, with its stop strings and token budget."""

    def __init__(self, decode: Callable[[Sequence[int]], str], stop: Sequence[str], max_tokens: int) -> None:
        self.max_tokens = max_tokens
        self.generated = 0
        self._detok = IncrementalDetokenizer(decode)
        self._stops = StopMatcher(stop)

    @property
    def stop_sequence(self) -> str | None:
        """The stop string that ended the output (None: another reason, or not ended yet)."""
        return self._stops.matched

    def on_token(self, token: int, is_eos: bool) -> tuple[str, FinishReason | None]:
        """The text the token adds (possibly empty), and why the sequence ends (None: it goes on)."""
        self.generated += 1
        if is_eos:
            return self._stops.flush(), "stop"
        text, hit = self._stops.feed(self._detok.add(token))
        if hit:
            return text, "stop"
        if self.generated >= self.max_tokens:
            tail, hit = self._stops.feed(self._detok.flush())
            return (text + tail, "stop") if hit else (text + tail + self._stops.flush(), "length")
        return text, None
