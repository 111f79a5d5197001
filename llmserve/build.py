"""The one place that turns the command line into the objects that serve: the models of the config with
the command line's defaults, the residency limits, runtime registration, and the registry over them. The
HTTP server and the in-process terminal chat are built from the same `Setup`, so a flag means the same
in both (`--max-loaded-models`, `--memory-budget`, `--keep-alive`, ...)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmserve.config.aliases import check_alias_owners, check_alias_pattern
from llmserve.config.entries import ModelConfig, ModelDefaults, choose_default, load_config, parse_config
from llmserve.config.runtime import RuntimeModels
from llmserve.errors import ConfigError
from llmserve.models.residency import Residency

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from llmserve.models.registry import ModelRegistry, Preload
    from llmserve.server.options import ServerOptions


@dataclass(frozen=True)
class Setup:
    models: list[ModelConfig]
    default_id: str
    preload: Preload
    residency: Residency | None
    runtime: RuntimeModels


def model_defaults(args: argparse.Namespace) -> ModelDefaults:
    return ModelDefaults(
        max_batch_size=args.max_batch_size,
        max_queue=args.max_queue,
        cache_dir=args.cache_dir,
        keep_alive=args.keep_alive,
        min_resident=args.min_resident,
        kv_cache_memory=args.kv_cache_memory,
        prefill_chunk=args.prefill_chunk,
        engine=args.engine,
        threads=args.threads,
    )


def models_from_args(args: argparse.Namespace, defaults: ModelDefaults) -> tuple[list[ModelConfig], str]:
    """The models to serve and the default model's API id, with the `--model-alias` patterns; raises
    `ConfigError`."""
    if args.command in ("multi-model", "ray"):
        models = load_config(args.config, defaults)
        default_id = choose_default(models, args.default_model_id, source=args.config)
    else:
        entry: dict[str, Any] = {
            "Plain": {"model_id": args.model_id},
            "dtype": args.dtype,
            "device": args.device,
        }
        if args.alias is not None:
            entry["alias"] = args.alias
        models = parse_config({"model": entry}, base=Path.cwd(), source="command line", defaults=defaults)
        default_id = models[0].api_id
    for pattern, target in args.model_alias:
        models = with_alias(models, pattern, target, default_id)
    return models, default_id


def residency_from_args(args: argparse.Namespace) -> Residency | None:
    """The limits on the models in memory, when the command line sets any."""
    if args.max_loaded_models is None and args.memory_budget is None:
        return None
    return Residency(
        args.max_loaded_models, budget=args.memory_budget, wait=args.load_wait, evict_pinned=args.evict_pinned
    )


def setup_from_args(args: argparse.Namespace) -> Setup:
    """Everything `serve`, `-i` and each replica of `ray` build on; raises `ConfigError`."""
    defaults = model_defaults(args)
    models, default_id = models_from_args(args, defaults)
    return Setup(
        models=models,
        default_id=default_id,
        preload=args.preload,
        residency=residency_from_args(args),
        runtime=RuntimeModels(args.allow_runtime_models, args.model_root, defaults),
    )


def build_registry(setup: Setup) -> ModelRegistry:
    """The registry of `setup` with the real engines and footprint estimates (what the in-process chat
    talks to; the HTTP app builds the same one in `create_app`)."""
    from llmserve.engine import load_engine
    from llmserve.engine.footprint import estimate
    from llmserve.models.registry import ModelRegistry

    return ModelRegistry(setup.models, setup.default_id, load_engine, setup.residency, estimate)


def build_app(setup: Setup, options: ServerOptions) -> Starlette:
    """The HTTP app of `setup` (`llmserve multi-model` and `plain`, and each replica of `llmserve ray`)."""
    from llmserve.server import create_app

    return create_app(
        setup.models,
        setup.default_id,
        preload=setup.preload,
        options=options,
        residency=setup.residency,
        runtime=setup.runtime,
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
