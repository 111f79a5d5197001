"""GGUF models and their converted copies.

The first load de-quantizes the GGUF file (slow: SmolLM2 takes ~20 s, mostly de-quantization and
tokenizer conversion), then saves the result as safetensors + tokenizer files in the cache directory,
keyed by the file's SHA-256 and the dtype; later loads, in this process or the next, read that copy.

The cache directory is `--cache-dir`, else `$LLMSERVE_CACHE_DIR`, else `$XDG_CACHE_HOME/llmserve`, else
`~/.cache/llmserve`. Entries are written to a temporary directory and renamed into place, so a crash
mid-write leaves no half entry; a failure to write only costs the next load its speed.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llmserve.config.entries import GGUFSpec
from llmserve.engine.progress import report

log = logging.getLogger(__name__)
MARKER = "llmserve-converted.json"
_DIGEST_LOCK = threading.Lock()


def cache_root(explicit: str | None = None) -> Path:
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get("LLMSERVE_CACHE_DIR"):
        return Path(os.environ["LLMSERVE_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "llmserve"


def file_digest(path: Path, root: Path) -> str:
    """SHA-256 of `path`, remembered in `root/digests.json` by (size, mtime) so a file is hashed once."""
    stat = path.stat()
    index_file = root / "digests.json"
    with _DIGEST_LOCK:
        try:
            index = json.loads(index_file.read_text())
        except (OSError, ValueError):
            index = {}
        known = index.get(str(path))
        if (
            isinstance(known, dict)
            and known.get("size") == stat.st_size
            and known.get("mtime_ns") == stat.st_mtime_ns
        ):
            return str(known["sha256"])
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(8 * 2**20):
                digest.update(chunk)
        index[str(path)] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest.hexdigest()}
        with contextlib.suppress(OSError):
            root.mkdir(parents=True, exist_ok=True)
            _write_atomic(index_file, json.dumps(index, indent=1))
        return digest.hexdigest()


def _write_atomic(target: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, target)


def converted_dir(root: Path, gguf_file: Path, dtype: str) -> Path:
    return root / "gguf" / f"{file_digest(gguf_file, root)[:32]}-{dtype}"


def is_complete(directory: Path) -> bool:
    return (directory / MARKER).is_file()


def save_converted(model: Any, tokenizer: Any | None, target: Path, source: Path) -> None:
    """Writes `model` (loaded from the GGUF file `source`, de-quantized) and, when it came from the
    same file, its tokenizer to `target`, atomically. Logs and returns on any failure."""
    tmp: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
        quantizer, config = getattr(model, "hf_quantizer", None), model.config
        quantization = getattr(config, "quantization_config", None)
        try:  # the weights are plain tensors already; only the GGUF marks stop save_pretrained
            model.hf_quantizer = None
            if quantization is not None:
                del config.quantization_config
            model.save_pretrained(tmp)
        finally:
            model.hf_quantizer = quantizer
            if quantization is not None:
                config.quantization_config = quantization
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        (tmp / MARKER).write_text(json.dumps({"source": str(source), "tokenizer": tokenizer is not None}))
        if target.exists():  # another process converted it meanwhile: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
            return
        os.replace(tmp, target)
        log.info("saved the converted GGUF model to %s", target)
    except Exception as exc:  # a cache is an optimisation: never fail the load for it
        log.warning("could not save the converted GGUF model to %s: %s: %s", target, type(exc).__name__, exc)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def has_tokenizer(directory: Path) -> bool:
    try:
        return bool(json.loads((directory / MARKER).read_text()).get("tokenizer"))
    except (OSError, ValueError):
        return False


def local_file(spec: GGUFSpec) -> Path | None:
    """The GGUF file on this disk: in its local directory, or the hub's local copy (downloaded if needed,
    as from_pretrained would). None when it cannot be had."""
    local = Path(spec.quantized_model_id) / spec.quantized_filename
    if local.is_file():
        return local
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(spec.quantized_model_id, spec.quantized_filename))
    except Exception as exc:  # offline, gated...: load the usual way, which will report the real error
        log.debug("no local copy of %s: %s", spec.quantized_filename, exc)
        return None


def local_copy(spec: GGUFSpec) -> Path | None:
    """The GGUF file if it is on this disk already (its local directory or the hub's cache); no download."""
    local = Path(spec.quantized_model_id) / spec.quantized_filename
    if local.is_file():
        return local
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(spec.quantized_model_id, spec.quantized_filename)
    except Exception:  # a malformed id, a broken cache: not on this disk
        return None
    return Path(found) if isinstance(found, str) else None


@contextlib.contextmanager
def one_parse(path: Path | None) -> Iterator[None]:
    """transformers reads a GGUF file's metadata three times per load (tokenizer, config, weights), each
    a full `GGUFReader` parse (~3 s for SmolLM2, most of it the vocabulary). Within this block, readers
    of `path` are one shared, read-only reader. Hold `LOAD_LOCK`: the swap is process-wide."""
    if path is None:
        yield
        return
    import gguf

    module: Any = gguf  # its reader class is swapped for a function below
    original = module.GGUFReader
    shared: dict[str, Any] = {}

    def reader(file: Any, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs or Path(file).resolve() != path.resolve():
            return original(file, *args, **kwargs)
        if "reader" not in shared:
            shared["reader"] = original(file)
        return shared["reader"]

    module.GGUFReader = reader
    try:
        yield
    finally:
        module.GGUFReader = original


def dequantized(options: dict[str, Any]) -> dict[str, Any]:
    """`options` asking transformers to de-quantize the whole file, as the converted copy needs. transformers
    5.24+ (`GgufConfig(dequantize=...)`) otherwise keeps weights packed where it has a kernel for them (a
    copy of those could not be saved), and warns about packed weights in any dtype but float32 even for the
    architectures it de-quantizes anyway. Older versions always de-quantize and take no such option."""
    import transformers

    config_class = getattr(transformers, "GgufConfig", None)
    if config_class is None or "quantization_config" in options:
        return options
    if "dequantize" not in inspect.signature(config_class).parameters:
        return options
    return {**options, "quantization_config": config_class(dequantize=True)}


def load_gguf(spec: GGUFSpec, dtype: Any, options: dict[str, Any], cache_dir: str | None) -> tuple[Any, Any]:
    """(tokenizer, model) of a GGUF spec: from the converted copy when there is one, else from the file
    (then saved as the converted copy). `options`: more from_pretrained arguments (device_map...)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    same_tokenizer = spec.tok_model_id == spec.quantized_model_id
    source = {"gguf_file": spec.quantized_filename}
    gguf_file = local_file(spec)
    dtype_name = str(dtype).removeprefix("torch.")
    target = None if gguf_file is None else converted_dir(cache_root(cache_dir), gguf_file, dtype_name)
    if target is not None and is_complete(target) and (has_tokenizer(target) or not same_tokenizer):
        report("tokenizer")
        tokenizer = AutoTokenizer.from_pretrained(target if same_tokenizer else spec.tok_model_id)
        report("weights")
        model = AutoModelForCausalLM.from_pretrained(target, dtype=dtype, **options)
        log.info("loaded %s from its converted copy %s", spec.quantized_filename, target)
        return tokenizer, model
    report("converting_gguf")
    with one_parse(gguf_file):
        if same_tokenizer:
            tokenizer = AutoTokenizer.from_pretrained(spec.tok_model_id, **source)
        else:
            tokenizer = AutoTokenizer.from_pretrained(spec.tok_model_id)
        model = AutoModelForCausalLM.from_pretrained(
            spec.quantized_model_id, dtype=dtype, **source, **dequantized(options)
        )
    if target is not None and gguf_file is not None:
        report("saving_converted")
        save_converted(model, tokenizer if same_tokenizer else None, target, gguf_file)
    return tokenizer, model
