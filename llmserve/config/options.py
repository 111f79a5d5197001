"""Per-model options of the config that need more than a type check: in-situ quantization names, the
mistral.rs `num_device_layers` syntax, and chat template overrides (read and syntax-checked at config
time, so a broken template is a one-line error naming its file and line before anything loads).

Pure Python (no torch): the engine turns these into a `BitsAndBytesConfig` and a `device_map`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

QuantMode = Literal["int8", "nf4", "fp4"]

# mistral.rs's in-situ quantization names → the nearest bitsandbytes mode that loses no more precision
# (bitsandbytes has 8-bit LLM.int8 and 4-bit nf4/fp4 only, so 5- and 6-bit round up to 8, 2- and 3-bit
# up to 4). Names with no faithful mapping (FP8, AFQ2, AFQ3...) are refused.
ISQ_NAMES: dict[str, QuantMode] = {
    **dict.fromkeys(["Q8_0", "Q8_1", "Q8K", "Q6K", "Q5_0", "Q5_1", "Q5K", "HQQ8", "AFQ8", "AFQ6"], "int8"),
    **dict.fromkeys(["Q4_0", "Q4_1", "Q4K", "Q3K", "Q2K", "HQQ4", "AFQ4"], "nf4"),
    "int8": "int8",
    "nf4": "nf4",
    "fp4": "fp4",
}


def isq_mode(name: str) -> QuantMode:
    """The bitsandbytes mode for an `in_situ_quant` name (case-sensitive for mistral.rs's names)."""
    mode = ISQ_NAMES.get(name) or ISQ_NAMES.get(name.lower())
    if mode is None:
        raise ValueError(f"'{name}' has no faithful bitsandbytes mapping; accepted: {', '.join(ISQ_NAMES)}")
    return mode


DeviceLayers = tuple[tuple[int, int], ...]  # (CUDA ordinal, number of decoder layers), in layer order


def parse_device_layers(value: int | str | list[str]) -> DeviceLayers:
    """mistral.rs's syntax: a count (all on GPU 0), or `"ORD:N;ORD:N"` strings, e.g. `["0:16;1:16"]`."""
    if isinstance(value, bool):
        raise ValueError("expected a layer count or 'ORDINAL:LAYERS;...' strings")
    if isinstance(value, int):
        parts = [f"0:{value}"]
    else:
        items = [value] if isinstance(value, str) else value
        parts = [p.strip() for item in items for p in str(item).split(";") if p.strip()]
        if len(parts) == 1 and ":" not in parts[0]:
            parts = [f"0:{parts[0]}"]
    layout: list[tuple[int, int]] = []
    for part in parts:
        ordinal, sep, count = part.partition(":")
        if not sep or not ordinal.strip().isdigit() or not count.strip().isdigit():
            raise ValueError(f"'{part}' is not ORDINAL:LAYERS (e.g. \"0:16;1:16\")")
        layout.append((int(ordinal), int(count)))
    ordinals = [o for o, _ in layout]
    if len(set(ordinals)) != len(ordinals):
        raise ValueError(f"a GPU ordinal appears twice in {';'.join(parts)}")
    if not layout:
        raise ValueError("expected at least one ORDINAL:LAYERS entry")
    return tuple(layout)


@dataclass(frozen=True)
class ChatTemplate:
    """A chat template override: its text and where it came from (a file path, or 'inline')."""

    text: str
    source: str


def _check_syntax(text: str, source: str) -> None:
    try:
        ImmutableSandboxedEnvironment().parse(text)
    except jinja2.TemplateSyntaxError as exc:
        raise ValueError(f"{source} line {exc.lineno}: template syntax error: {exc.message}") from None


def read_template(value: str, base: Path, *, file_only: bool = False) -> ChatTemplate:
    """`chat_template`: a `.jinja` file, a `tokenizer_config.json`-style `.json` file holding
    `chat_template`, or an inline template. `file_only` (for `jinja_explicit`): a `.jinja` file only."""
    looks_like_file = value.endswith((".jinja", ".json")) and "{" not in value
    if not looks_like_file:
        if file_only:
            raise ValueError(f"'{value[:60]}' is not a .jinja file")
        if "{{" not in value and "{%" not in value:
            raise ValueError(
                f"'{value[:60]}' is neither a .jinja/.json file nor an inline template ({{{{ }}}} / {{% %}})"
            )
        _check_syntax(value, "inline template")
        return ChatTemplate(value, "inline")
    path = (base / Path(value).expanduser()).resolve()
    if file_only and path.suffix != ".jinja":
        raise ValueError(f"'{value}' is not a .jinja file")
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read '{path}' ({exc.strerror or exc})") from None
    if path.suffix == ".json":
        raw = _template_from_json(raw, path)
    _check_syntax(raw, str(path))
    return ChatTemplate(raw, str(path))


def _template_from_json(raw: str, path: Path) -> str:
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} line {exc.lineno}: invalid JSON: {exc.msg}") from None
    template = data.get("chat_template") if isinstance(data, dict) else None
    if isinstance(template, list):  # [{"name": "default", "template": ...}, ...] as tokenizers save them
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    if not isinstance(template, str):
        raise ValueError(f'{path} holds no "chat_template" string')
    return template
