"""engine/pacing: the prompt tokens a step reads, from the measured decode time and prefill rate."""

from __future__ import annotations

from llmserve.engine.pacing import MIN_CHUNK, PrefillPacer


def test_nothing_decoding_reads_a_whole_chunk() -> None:
    assert PrefillPacer(512).budget(decoding=False) == 512
    assert PrefillPacer(4).budget(decoding=False) == MIN_CHUNK


def test_decoding_streams_bound_the_chunk_by_a_decode_steps_time() -> None:
    pacer = PrefillPacer(512)
    assert pacer.budget(decoding=True) == MIN_CHUNK  # nothing measured yet
    pacer.prefilled(1000, 1.0)  # 1,000 tokens/s
    pacer.decoded(0.05)  # 50 ms a step
    assert pacer.budget(decoding=True) == 50
    pacer.decoded(10.0)  # a slow step: the smoothed time grows, the chunk with it, up to the cap
    assert pacer.budget(decoding=True) == 512
    slow = PrefillPacer(512)
    slow.prefilled(10, 1.0)
    slow.decoded(0.01)
    assert slow.budget(decoding=True) == MIN_CHUNK  # never below the floor
    slow.prefilled(0, 0.0)  # no tokens read: no measurement
    assert slow.budget(decoding=True) == MIN_CHUNK
