"""Which model a request is for, read as the replica's own routes will read it: the body's `model` (the
generation APIs: OpenAI, Responses, Anthropic, Ollama), `model_id` (/v1/models/reload, ...), or the
path's name (/v2/models/NAME[/versions/V]/..., /v2/repository/models/NAME/...), resolved by a registry
built from the same config to the model version it means (`default`, aliases, ID@VERSION). The ingress
sends the request, through Ray Serve's model multiplexing, to a replica that holds that version."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from llmserve.errors import ModelNotFound
from llmserve.models.registry import ModelRegistry

# the routes that generate (or embed) with the body's model, which is the default model when left out
GENERATES = frozenset(
    {
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/responses",
        "/v1/messages",
        "/v1/messages/count_tokens",
        "/api/chat",
        "/api/generate",
        "/api/embed",
        "/api/embeddings",
    }
)
# the routes that load the model their body names (`model_id`) or their path names
LOADS = frozenset({"/v1/models/reload", "/v1/models/promote"})
NAMES = frozenset({"/v1/models/unload", "/v1/models/status", "/api/show"})
V2_MODEL = re.compile(
    r"^/v2/models/(?P<name>.+?)(?:/versions/(?P<version>[^/]+))?(?P<verb>/(?:generate|generate_stream|infer|ready))?$"
)
V2_REPOSITORY = re.compile(r"^/v2/repository/models/(?P<name>.+)/(?P<verb>load|unload)$")
V2_GENERATES = frozenset({"/generate", "/generate_stream", "/infer"})


@dataclass(frozen=True)
class Target:
    """The model version a request is for (its unit id; None: none, or one the config lacks: any replica
    answers, with the 404 in the request's API's shape), and whether the request may load it there."""

    unit: str | None
    holds: bool


def named(method: str, path: str, body: bytes) -> tuple[str | None, bool, bool]:
    """(the name the request gives, whether it names a model at all, whether it may load it)."""
    if method == "POST" and (path in GENERATES or path in LOADS or path in NAMES):
        fields = _json_object(body)
        key = "model" if path in GENERATES or path == "/api/show" else "model_id"
        value = fields.get(key, fields.get("name") if path == "/api/show" else None)
        name = value if isinstance(value, str) else None
        return name, name is not None or path in GENERATES, path not in NAMES
    match = V2_MODEL.match(path) or V2_REPOSITORY.match(path)
    if match is None:
        return None, False, False
    name = match["name"]
    version = match.groupdict().get("version")
    verb = match["verb"] or ""
    holds = method == "POST" and (verb in V2_GENERATES or verb == "load")
    return (f"{name}@{version}" if version else name), True, holds


def target(registry: ModelRegistry, method: str, path: str, body: bytes) -> Target:
    name, names_one, holds = named(method, path, body)
    if not names_one:
        return Target(None, False)
    try:
        return Target(registry.resolve(name).unit_id, holds)
    except ModelNotFound:
        return Target(None, False)


def _json_object(body: bytes) -> dict[str, object]:
    try:
        value = json.loads(body)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
