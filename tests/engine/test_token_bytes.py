"""The bytes of each token for logprobs: whole characters as their UTF-8, partial ones as the token's own
byte(s), so the tokens of one character join back into it; for a byte-level BPE tokenizer (the tiny
test model's, SmolLM2's family) and a SentencePiece one with byte fallback (Llama 2's, Mistral's)."""

from __future__ import annotations

from tiny import build_tokenizer
from tokenizers import Tokenizer, decoders, models, normalizers
from transformers import PreTrainedTokenizerFast

from llmserve.engine.token_bytes import token_bytes_of

TEXT = "é Paris 日本 🙂 naïve"


def joined(tokenizer: PreTrainedTokenizerFast, text: str) -> list[bytes]:
    def decode(ids: list[int]) -> str:
        return str(tokenizer.decode(ids, skip_special_tokens=True))

    token_bytes = token_bytes_of(tokenizer, decode)
    return [token_bytes(i) for i in tokenizer(text, add_special_tokens=False)["input_ids"]]


def test_byte_level_bpe_tokens_carry_their_part_of_a_character() -> None:
    tokenizer = build_tokenizer()
    pieces = joined(tokenizer, TEXT)
    assert b"".join(pieces) == TEXT.encode()
    assert any(not piece.decode("utf-8", errors="ignore") for piece in pieces)  # some hold part of one
    assert all(len(piece) >= 1 for piece in pieces)


def sentencepiece_with_byte_fallback() -> PreTrainedTokenizerFast:
    """A Llama-2-style tokenizer: `▁` for a space, `<0xHH>` for the bytes of unknown characters."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"<0x{b:02X}>": 3 + b for b in range(256)}}
    for word in ("▁Paris", "▁na", "ï", "ve", "▁"):
        vocab[word] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def test_sentencepiece_byte_fallback_tokens_are_their_byte() -> None:
    tokenizer = sentencepiece_with_byte_fallback()
    ids = tokenizer(" 日", add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids)[-3:] == ["<0xE6>", "<0x97>", "<0xA5>"]
    assert joined(tokenizer, " 日")[-3:] == [b"\xe6", b"\x97", b"\xa5"]


def test_special_tokens_stand_for_no_bytes() -> None:
    tokenizer = build_tokenizer()
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    token_bytes = token_bytes_of(tokenizer, lambda ids: str(tokenizer.decode(ids, skip_special_tokens=True)))
    assert token_bytes(eos) == b""
