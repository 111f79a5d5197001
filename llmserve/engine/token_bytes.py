"""The bytes each token stands for, as OpenAI's logprobs `bytes` report them: the tokens of one
character each carry their part of its UTF-8 encoding, so a client joins them back into the character
(decoding a lone part gives U+FFFD). A token that decodes to whole characters stands for their UTF-8
bytes; for the others the token's own spelling tells: byte-level BPE tokenizers (GPT-2's family,
SmolLM2, Llama 3, Qwen) spell bytes with printable stand-ins, SentencePiece tokenizers with byte fallback
spell them `<0xC3>` (and a space `▁`)."""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from typing import Any

_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


@cache
def _byte_decoder() -> dict[str, int]:
    """GPT-2's inverse `bytes_to_unicode`: the printable character that stands for each byte."""
    spans = ((ord("!"), ord("~")), (ord("¡"), ord("¬")), (ord("®"), ord("ÿ")))
    printable = [byte for first, last in spans for byte in range(first, last + 1)]
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(char): byte for byte, char in zip(printable, chars, strict=True)}


def _byte_level(tokenizer: Any) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = getattr(backend, "decoder", None)
    return type(decoder).__name__ == "ByteLevel"


def token_bytes_of(tokenizer: Any, decode: Callable[[list[int]], str]) -> Callable[[int], bytes]:
    """A function from a token id to the bytes it stands for in the output of `decode`."""
    byte_level = _byte_level(tokenizer)
    table = _byte_decoder()

    def token_bytes(token_id: int) -> bytes:
        text = decode([token_id])
        if "\ufffd" not in text:
            return text.encode("utf-8")
        piece = str(tokenizer.convert_ids_to_tokens(token_id))
        found = _BYTE_TOKEN.fullmatch(piece)
        if found:
            return bytes([int(found.group(1), 16)])
        if byte_level and all(ch in table for ch in piece):
            return bytes(table[ch] for ch in piece)
        return piece.replace("▁", " ").encode("utf-8")

    return token_bytes
