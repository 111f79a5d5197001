"""What the wire types of every API share: the strict base of request bodies, `parse_request`, the
64-bit integer bounds, the error body and /health's answer. Imports nothing heavy.

Requests are parsed with `parse_request`, which turns every validation problem into one
`InvalidRequest` whose `param` names the field (`messages[0].content`). Request types are strict, as
OpenAI is: `"stream": "yes"`, `"n": "2"` or `"temperature": "0.5"` is a 400, never coerced; only a JSON
integer where a number is expected is taken (`"temperature": 1`).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmserve.errors import InvalidRequest

M = TypeVar("M", bound=BaseModel)


# A 64-bit signed integer (OpenAI's bounds for `seed`): more would overflow the engine's generator.
INT64_MAX = 2**63 - 1
Int64 = Annotated[int, Field(ge=-INT64_MAX - 1, le=INT64_MAX)]


class RequestBody(BaseModel):
    """Base of every request body type: unknown keys and lax types (a string for a bool or a number, a
    number for a bool) are errors. Subclasses that set `model_config` keep both (pydantic merges it)."""

    model_config = ConfigDict(extra="forbid", strict=True)


# The tags pydantic adds to an error's location for each member of a union (`stop.str`,
# `input.list[int]`, `content.TextPart`) and for validators (`function-after[...]`): not fields.
_TAG = re.compile(r"^(str|int|float|bool|none|bytes|[A-Z]\w*)$|[\[-]")


def _param(loc: tuple[int | str, ...], *, key_last: bool = False) -> str:
    """The field at `loc` as `messages[0].content`; `key_last`: the last part is a key of the body's
    (an unknown parameter), whatever it looks like."""
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, str) and _TAG.search(part) and not (key_last and i == len(loc) - 1):
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse_request(model: type[M], body: Any) -> M:
    """Validate a JSON body; the first problem becomes an `InvalidRequest` with `param` set."""
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        error = exc.errors()[0]
        param = _param(error["loc"], key_last=error["type"] == "extra_forbidden") or None
        if error["type"] == "extra_forbidden":
            raise InvalidRequest(f"unknown parameter '{param}'", param=param) from None
        if error["type"] == "missing":
            raise InvalidRequest(f"missing required parameter '{param}'", param=param) from None
        message = str(error["msg"]).removeprefix("Value error, ")
        raise InvalidRequest(f"invalid value for '{param}': {message}", param=param) from None


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    error: ErrorBody


class Health(BaseModel):
    status: Literal["ok"] = "ok"
