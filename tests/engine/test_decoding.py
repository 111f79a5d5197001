from __future__ import annotations

import pytest
from tiny import build_tokenizer

from llmserve.engine.decoding import IncrementalDetokenizer, StopMatcher


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.mark.parametrize("text", ["Hello, how are you?", "héllo wörld 世界 🙂 привет", "  spaced   out  "])
def test_deltas_add_up_to_the_full_decode_and_never_split_a_character(tokenizer, text: str) -> None:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
    detok = IncrementalDetokenizer(decode)
    deltas = [detok.add(i) for i in ids]
    deltas.append(detok.flush())
    assert "".join(deltas) == text
    assert not any("\ufffd" in d for d in deltas)
    assert len(ids) > len(text.split())  # several tokens per word: the test really splits characters


def test_stop_matcher_holds_back_a_possible_stop_and_cuts_at_the_first_hit() -> None:
    stops = StopMatcher(["END", "##"])
    assert stops.feed("abc E") == ("abc ", False)
    assert stops.feed("N") == ("", False)
    assert stops.feed("X more") == ("ENX more", False)
    assert stops.feed("#") == ("", False)
    assert stops.feed("# tail") == ("", True)


def test_stop_matcher_earliest_stop_wins_and_flush_returns_held_text() -> None:
    assert StopMatcher(["cd", "b"]).feed("abcd") == ("a", True)
    stops = StopMatcher(["xyz"])
    assert stops.feed("abx") == ("ab", False)
    assert stops.flush() == "x"
    assert StopMatcher([]).feed("anything") == ("anything", False)


def test_stop_matcher_names_the_stop_string_that_ended_the_text() -> None:
    stops = StopMatcher(["cd", "b"])
    assert stops.matched is None
    assert stops.feed("abcd") == ("a", True)
    assert stops.matched == "b"  # the earliest in the text, not the first listed
    spanning = StopMatcher(["END", "##"])
    assert spanning.feed("x #") == ("x ", False) and spanning.matched is None
    assert spanning.feed("# y") == ("", True) and spanning.matched == "##"
