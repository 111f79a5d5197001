"""engine/pacing: the prompt tokens a step reads, steered to the time of a decode step."""

from __future__ import annotations

from llmserve.engine.pacing import MIN_CHUNK, PrefillPacer


def test_nothing_decoding_reads_a_whole_chunk() -> None:
    assert PrefillPacer(512).budget(decoding=False) == 512
    assert PrefillPacer(4).budget(decoding=False) == MIN_CHUNK


def test_the_chunk_is_steered_to_a_decode_steps_time() -> None:
    pacer = PrefillPacer(512)
    assert pacer.budget(decoding=True) == MIN_CHUNK  # nothing measured yet
    pacer.decoded(0.1)

    def chunk_time(tokens: int) -> float:  # every pass reads the weights: 40 ms, plus 1 ms a token
        return 0.04 + 0.001 * tokens

    for _ in range(20):
        size = pacer.budget(decoding=True)
        pacer.prefilled(size, chunk_time(size), decoding=True)
    assert 55 <= pacer.budget(decoding=True) <= 65  # 40 ms + 60 tokens x 1 ms = one decode step
    pacer.prefilled(10, 1.0, decoding=True)  # a step that read less than a chunk says nothing
    pacer.prefilled(60, 1.0, decoding=False)  # nor one without decoding streams
    assert 55 <= pacer.budget(decoding=True) <= 65
    for _ in range(20):  # decode steps grow slower: the chunk may grow, up to the cap
        pacer.decoded(10.0)
        pacer.prefilled(pacer.budget(decoding=True), 0.1, decoding=True)
    assert pacer.budget(decoding=True) == 512
    for _ in range(20):  # and shrinks back, never below the floor
        pacer.decoded(0.001)
        pacer.prefilled(pacer.budget(decoding=True), 1.0, decoding=True)
    assert pacer.budget(decoding=True) == MIN_CHUNK


def test_an_engine_sets_its_own_floor() -> None:
    pacer = PrefillPacer(512, min_chunk=4)  # the transformers engine's: late in long prompts 16 is too many
    assert pacer.budget(decoding=True) == 4
    pacer.decoded(0.05)
    for _ in range(20):  # a chunk slower than a decode step at any size: the floor, not the default's
        pacer.prefilled(pacer.budget(decoding=True), 0.2, decoding=True)
    assert pacer.budget(decoding=True) == 4 < MIN_CHUNK
