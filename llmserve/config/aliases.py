"""Model-name aliases: glob patterns (`claude-*`) of names no model has, routed to one model, so that a
client that names models of its own (Claude Code's `claude-sonnet-4-5-...`, `claude-haiku-...`) is
served by a chosen model instead of a 404 or a second load. Set per entry (`"model_aliases"`) or on the
command line (`--model-alias PATTERN=MODEL`); the registry's `resolve` applies them, after exact names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from llmserve.config.validation import json_path
from llmserve.errors import ConfigError

if TYPE_CHECKING:
    from llmserve.config.entries import ModelConfig


def check_alias_pattern(pattern: str) -> None:
    """A `model_aliases` pattern: a non-empty fnmatch glob (`claude-*`) that is not `default`."""
    if not pattern.strip() or pattern == "default":
        raise ValueError(f"'{pattern}' is not a model alias pattern; use a glob such as 'claude-*'")


def check_alias_owners(models: Sequence[ModelConfig], source: str) -> None:
    """The same pattern routed to two different API ids is a config error."""
    owners: dict[str, str] = {}
    for model in models:
        for pattern in model.model_aliases:
            if owners.setdefault(pattern, model.api_id) != model.api_id:
                raise ConfigError(
                    f"{source}: {json_path((model.label, 'model_aliases'))}: pattern '{pattern}' already "
                    f"routes to '{owners[pattern]}'"
                )


def with_alias(
    models: list[ModelConfig], pattern: str, target: str, default_id: str, source: str = "--model-alias"
) -> list[ModelConfig]:
    """`models` with `pattern` routed to the model `target` names (`default` or an API id): the
    command line's `--model-alias PATTERN=MODEL`. An unknown target is a `ConfigError`."""
    try:
        check_alias_pattern(pattern)
    except ValueError as exc:
        raise ConfigError(f"{source} '{pattern}={target}': {exc}") from None
    api_id = default_id if target == "default" else target
    index = next((i for i, m in enumerate(models) if m.api_id == api_id), None)
    if index is None:
        ids = ", ".join(dict.fromkeys(m.api_id for m in models))
        raise ConfigError(
            f"{source} '{pattern}={target}': '{target}' names no model; valid choices: default, {ids}"
        )
    out = list(models)
    out[index] = replace(models[index], model_aliases=(*models[index].model_aliases, pattern))
    check_alias_owners(out, source)
    return out
