"""How many prompt tokens a step reads (chunked prefill), so that reading new prompts never stalls the
streams already decoding for long.

With nothing decoding, a step reads up to `prefill_chunk` tokens: nobody waits on it. With streams
decoding, the chunk is steered so that reading it takes about `SHARE` times a decode step: after each
chunk, the size is scaled by the ratio of that target to the time the chunk took (at most doubling, at
least `min_chunk` tokens and at most `prefill_chunk`). A chunk's time is not proportional to its tokens
(every forward pass reads all the weights once), so the size is found by measuring, not computed from a
rate. A stream's inter-token latency then stays within about (1 + SHARE) times a decode step, and the
prompts are read as fast as that allows.
"""

from __future__ import annotations

SHARE = 1.0  # of a decode step's time, what the prompt tokens of the same step may take
MIN_CHUNK = 16  # the default smallest chunk (llama.cpp: a token costs about the same in any batch, and a
# floor of 4 there doubled the time to first token of 16 streams: 1.35 s -> 2.50 s in bench_serving)
_SMOOTHING = 0.3  # weight of the newest decode time


class PrefillPacer:
    def __init__(self, prefill_chunk: int, min_chunk: int = MIN_CHUNK) -> None:
        self.min_chunk = max(1, min_chunk)
        self.prefill_chunk = max(self.min_chunk, prefill_chunk)
        self._decode_seconds: float | None = None
        self._chunk = self.min_chunk  # the size steered to while streams decode

    def budget(self, decoding: bool) -> int:
        """Prompt tokens the next step may read; `decoding`: some stream waits for its next token."""
        return self._chunk if decoding else self.prefill_chunk

    def decoded(self, seconds: float) -> None:
        old = self._decode_seconds
        self._decode_seconds = seconds if old is None else old + _SMOOTHING * (seconds - old)

    def prefilled(self, tokens: int, seconds: float, decoding: bool) -> None:
        """A step read `tokens` prompt tokens in `seconds`, while streams were `decoding` or not."""
        if not decoding or tokens < self._chunk or seconds <= 0 or self._decode_seconds is None:
            return  # only a full chunk read beside decoding streams says how the size fits
        target = self._decode_seconds * SHARE
        scaled = int(self._chunk * min(2.0, target / seconds))
        self._chunk = max(self.min_chunk, min(self.prefill_chunk, scaled))

    def mixed(self, tokens: int, seconds: float) -> None:
        """A step read `tokens` prompt tokens in the same pass as the decoding streams' rows (one batch,
        llama.cpp): the prompt's share of the step's `seconds` is what exceeds a decode step."""
        if self._decode_seconds is not None:
            self.prefilled(tokens, max(seconds - self._decode_seconds, 1e-6), True)
