"""How many prompt tokens a step reads (chunked prefill), so that reading new prompts never stalls the
streams already decoding for long.

With nothing decoding, a step reads up to `prefill_chunk` tokens: nobody waits on it. With streams
decoding, it reads what fits in `SHARE` times the time of a decode step, from the measured prefill rate
(tokens per second, which falls as a prompt's context grows), at least `MIN_CHUNK` tokens and at most
`prefill_chunk`: a stream's inter-token latency then stays within about (1 + SHARE) times what decoding
alone takes, and the prompts are read at the rate the machine gives them.
"""

from __future__ import annotations

SHARE = 1.0  # of a decode step's time, what the prompt tokens of the same step may take
MIN_CHUNK = 16
_SMOOTHING = 0.3  # weight of the newest measurement


class PrefillPacer:
    def __init__(self, prefill_chunk: int) -> None:
        self.prefill_chunk = max(MIN_CHUNK, prefill_chunk)
        self._decode_seconds: float | None = None
        self._rate: float | None = None  # prompt tokens per second

    def budget(self, decoding: bool) -> int:
        """Prompt tokens the next step may read; `decoding`: some stream waits for its next token."""
        if not decoding:
            return self.prefill_chunk
        if self._rate is None or self._decode_seconds is None:
            return MIN_CHUNK  # measure first
        fits = int(self._rate * self._decode_seconds * SHARE)
        return max(MIN_CHUNK, min(self.prefill_chunk, fits))

    def decoded(self, seconds: float) -> None:
        self._decode_seconds = _smooth(self._decode_seconds, seconds)

    def prefilled(self, tokens: int, seconds: float) -> None:
        if tokens > 0 and seconds > 0:
            self._rate = _smooth(self._rate, tokens / seconds)


def _smooth(old: float | None, new: float) -> float:
    return new if old is None else old + _SMOOTHING * (new - old)
