"""Model-name aliases: glob patterns (`claude-*`) of names no model has, routed to one model, so that a
client that names models of its own (Claude Code's `claude-sonnet-4-5-...`, `claude-haiku-...`) is
served by a chosen model instead of a 404 or a second load. Set per entry (`"model_aliases"`) or on the
command line (`--model-alias PATTERN=MODEL`); the registry's `resolve` applies them, after exact names.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from llmserve.config.validation import json_path
from llmserve.errors import ConfigError


class Aliased(Protocol):
    """What a model entry (`ModelConfig`) tells about its aliases."""

    @property
    def label(self) -> str: ...

    @property
    def api_id(self) -> str: ...

    @property
    def model_aliases(self) -> tuple[str, ...]: ...


def check_alias_pattern(pattern: str) -> None:
    """A `model_aliases` pattern: a non-empty fnmatch glob (`claude-*`) that is not `default`."""
    if not pattern.strip() or pattern == "default":
        raise ValueError(f"'{pattern}' is not a model alias pattern; use a glob such as 'claude-*'")


def check_alias_owners(models: Sequence[Aliased], source: str) -> None:
    """The same pattern routed to two different API ids is a config error."""
    owners: dict[str, str] = {}
    for model in models:
        for pattern in model.model_aliases:
            if owners.setdefault(pattern, model.api_id) != model.api_id:
                raise ConfigError(
                    f"{source}: {json_path((model.label, 'model_aliases'))}: pattern '{pattern}' already "
                    f"routes to '{owners[pattern]}'"
                )
