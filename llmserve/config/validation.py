"""Pydantic validation errors of the config, turned into one readable line with a JSON path."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

_JSON_TYPES = {
    "model_type": "a JSON object",
    "dict_type": "a JSON object",
    "string_type": "a string",
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
}

_JSON_NAMES = {
    "str": "a string",
    "int": "a number",
    "float": "a number",
    "bool": "a boolean",
    "list": "an array",
    "dict": "an object",
    "NoneType": "null",
}


def json_path(loc: tuple[int | str, ...]) -> str:
    return "$" + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)


def describe(error: Any) -> str:
    """One readable sentence for a pydantic error, listing valid choices where there are some."""
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "missing required field"
    if kind in _JSON_TYPES:
        got = type(error["input"]).__name__
        return f"expected {_JSON_TYPES[kind]}, got {_JSON_NAMES.get(got, got)}"
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def valid_keys(entry: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    """'; valid keys: ...' of the object at `loc` (below the label), for an unknown-key error."""
    model = entry
    for part in loc[1:-1]:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        inner = [
            a for a in getattr(annotation, "__args__", ()) if isinstance(a, type) and issubclass(a, BaseModel)
        ]
        if not inner:
            return ""
        model = inner[0]
    return "; valid keys: " + ", ".join(model.model_fields)
