"""Models registered at run time through `POST /v2/repository/models/{name}/load` with
`{"parameters": {"config": {...}}}`: only with `--allow-runtime-models`; the entry is validated like one
of the config file (same defaults), its API id is the name in the path, and with `--model-root` every
local path must lie inside that directory (relative paths are relative to it)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmserve.config.entries import GGUFSpec, ModelConfig, ModelDefaults, parse_config
from llmserve.errors import ConfigError, InvalidRequest


@dataclass(frozen=True)
class RuntimeModels:
    allowed: bool = False
    model_root: Path | None = None
    defaults: ModelDefaults = field(default_factory=ModelDefaults)

    def model(self, name: str, config: Any) -> ModelConfig:
        """The validated entry; raises `InvalidRequest` (400) naming what is wrong."""
        if isinstance(config, str):
            try:
                config = json.loads(config)
            except json.JSONDecodeError as exc:
                raise InvalidRequest(f"parameters.config is not valid JSON: {exc}") from None
        if not isinstance(config, dict):
            raise InvalidRequest("parameters.config must be a model entry (a JSON object)")
        entry = {**config, "alias": name}
        base = self.model_root or Path.cwd()
        try:
            (model,) = parse_config(
                {name: entry}, base=base, source="parameters.config", defaults=self.defaults
            )
        except ConfigError as exc:
            raise InvalidRequest(str(exc)) from None
        if self.model_root is not None:
            for path in _local_paths(model):
                if not path.resolve().is_relative_to(self.model_root.resolve()):
                    raise InvalidRequest(f"parameters.config: local path {path} is outside --model-root")
        return model


def _local_paths(model: ModelConfig) -> list[Path]:
    spec = model.spec
    ids = [spec.tok_model_id, spec.quantized_model_id] if isinstance(spec, GGUFSpec) else [spec.model_id]
    paths = [Path(i) for i in ids if Path(i).is_absolute()]  # config resolved every local path
    if model.chat_template is not None and model.chat_template.source != "inline":
        paths.append(Path(model.chat_template.source))
    return paths
