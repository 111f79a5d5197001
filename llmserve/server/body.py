"""Reading a request body as JSON: the one place every route that takes a body goes through (/v1 and /v2).

JSON as RFC 8259 has it and nothing more: UTF-8 (a leading BOM is skipped), no `NaN`/`Infinity` (nor a
number too large for a double), no integer longer than Python reads (4300 digits), no lone surrogates
(`"\\ud800"` names no character: a tokenizer or a response could not encode it), and at most `MAX_DEPTH`
levels of nesting (deeper would exhaust Python's stack here or further on). Anything else is an
`InvalidRequest`, a 400 in the route's own error shape.
"""

from __future__ import annotations

import json
import math
import re
import sys
from itertools import compress, repeat
from typing import Any

from starlette.requests import Request

from llmserve.errors import InvalidRequest

MAX_DEPTH = 128  # serde_json's default; a JSON schema in `tools` or `response_format` is far shallower
_CONTAINERS = (dict, list)
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")  # a \uD800-\uDFFF escape, paired or not


async def read_json(request: Request) -> Any:
    return parse_json(await request.body())


def parse_json(raw: bytes) -> Any:
    raw = raw.removeprefix(b"\xef\xbb\xbf")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(
            f"the request body is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
        ) from None
    try:
        body = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None
    except ValueError:  # int() refuses a number this long (a guard against quadratic time)
        limit = sys.get_int_max_str_digits()
        raise InvalidRequest(f"the request body holds an integer of more than {limit} digits") from None
    except RecursionError:
        raise InvalidRequest(_too_deep()) from None
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH:  # else it cannot be deeper
        _check_depth(body)
    if b"\\u" in raw and _SURROGATE_ESCAPE.search(raw):  # else there is no surrogate in it
        _check_strings(body)
    return body


def _no_constant(name: str) -> Any:
    raise InvalidRequest(f"the request body is not valid JSON: {name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise InvalidRequest(f"the number {text[:40]} in the request body is too large for a double")
    return value


def _too_deep() -> str:
    return f"the request body is nested more than {MAX_DEPTH} levels deep"


def _check_depth(body: Any) -> None:
    """No container deeper than `MAX_DEPTH` (a walk level by level: no recursion, no paths, fast)."""
    level = [body] if isinstance(body, _CONTAINERS) else []
    for _ in range(MAX_DEPTH):
        inner: list[Any] = []
        for container in level:
            items = container.values() if isinstance(container, dict) else container
            inner += compress(items, map(isinstance, items, repeat(_CONTAINERS)))  # all in C
        if not inner:
            return
        level = inner
    raise InvalidRequest(_too_deep())


def _check_strings(body: Any) -> None:
    """Every key and string encodes as UTF-8; the first that does not is named by its path."""
    pending: list[tuple[Any, str]] = [(body, "")]
    while pending:
        value, path = pending.pop()
        if isinstance(value, str):
            _encodable(value, path)
            continue
        if not isinstance(value, dict | list):
            continue
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(key, str):
                _encodable(key, path, key=True)
            if isinstance(item, str | dict | list):
                inner = f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else key)
                pending.append((item, inner))


def _encodable(text: str, path: str, *, key: bool = False) -> None:
    """`text` (a string at `path`, or a key of the object there) encodes as UTF-8."""
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        where = f"'{path}'" if path else "the body"
        what = f"a key in {where}" if key else where
        raise InvalidRequest(
            f"{what} holds a lone surrogate (\\u{ord(text[exc.start]):04x}), which is not a character",
            param=path or None,
        ) from None
