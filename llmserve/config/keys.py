"""The keys file (`--keys FILE`, `LLMSERVE_KEYS_FILE`): one entry per tenant, JSON or TOML.

```json
{"alice": {"key": "sk-alice-1", "models": ["smol", "tiny*"], "requests_per_minute": 60,
           "tokens_per_minute": 20000, "max_concurrent": 4, "priority": "normal", "weight": 1,
           "admin": false},
 "ops":   {"key_sha256": "9f86d0...", "models": ["*"], "admin": true}}
```

A key is stored as given (`key`) or as the hex SHA-256 of it (`key_sha256`); either way only its hash is
kept, and a key a request presents is hashed and compared with every entry's hash in constant time.
`models` are glob patterns over API ids and `ID@VERSION` names. TOML needs Python 3.11 (`tomllib`), or
the `tomli` package on 3.10. Any problem is a `ConfigError` of one line naming the file and the entry.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from llmserve.errors import ConfigError

Priority = Literal["high", "normal", "low"]
PRIORITIES: tuple[Priority, ...] = ("high", "normal", "low")  # served strictly in this order
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,63}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_FIELDS = {
    "key",
    "key_sha256",
    "models",
    "requests_per_minute",
    "tokens_per_minute",
    "max_concurrent",
    "priority",
    "weight",
    "admin",
}
MAX_WEIGHT = 1000.0


@dataclass(frozen=True)
class Tenant:
    """Who a request is for, as the model layer sees it: the name (in logs, metrics and usage; never the
    key), its share of a busy model (`weight`, within its `priority` class) and the models it may use."""

    name: str
    weight: float = 1.0
    priority: Priority = "normal"
    models: tuple[str, ...] = ("*",)

    @property
    def rank(self) -> int:
        """0 for the class served first."""
        return PRIORITIES.index(self.priority)

    def may_use(self, api_id: str, unit_id: str) -> bool:
        """A pattern matches the model's API id or its `ID@VERSION` name."""
        return any(fnmatch.fnmatchcase(api_id, p) or fnmatch.fnmatchcase(unit_id, p) for p in self.models)


# The tenant of the all-powerful `--api-key` keys: a name no keys file entry can have.
API_KEY_TENANT = Tenant("--api-key")


@dataclass(frozen=True)
class Limits:
    """A key's quotas; None: no limit."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_concurrent: int | None = None

    @property
    def any(self) -> bool:
        return any(
            v is not None for v in (self.requests_per_minute, self.tokens_per_minute, self.max_concurrent)
        )


@dataclass(frozen=True)
class KeyEntry:
    tenant: Tenant
    digest: bytes = field(repr=False)  # SHA-256 of the key
    limits: Limits = Limits()
    admin: bool = False

    @property
    def name(self) -> str:
        return self.tenant.name


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def match(given: str, digests: Sequence[bytes]) -> int | None:
    """The index of the digest that is the hash of `given`, or None. Every digest is compared, in
    constant time and without an early exit, so the time taken tells nothing about which came close."""
    wanted = digest(given)
    found: int | None = None
    for index, candidate in enumerate(digests):
        if hmac.compare_digest(wanted, candidate):
            found = index
    return found


@dataclass(frozen=True)
class Keys:
    """The entries of one keys file as read (`source`: its path, read again on reload)."""

    entries: tuple[KeyEntry, ...] = ()
    source: str | None = None

    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    def find(self, given: str) -> KeyEntry | None:
        """The entry whose key is `given` (compared as hashes, in constant time)."""
        index = match(given, [e.digest for e in self.entries])
        return None if index is None else self.entries[index]


def _where(source: str, name: str) -> str:
    return f"keys file {source}: entry '{name}'"


def _count(value: Any, where: str, key: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"{where}: '{key}' must be a whole number of 1 or more (or left out), not {value!r}"
        )
    return value


def _models(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ("*",)
    if not isinstance(value, list) or not all(isinstance(p, str) and p.strip() for p in value):
        raise ConfigError(
            f"{where}: 'models' must be a list of model names or glob patterns, e.g. [\"smol*\"]"
        )
    return tuple(p.strip() for p in value)


def _digest_of(body: dict[str, Any], where: str) -> bytes:
    key, hashed = body.get("key"), body.get("key_sha256")
    if (key is None) == (hashed is None):
        raise ConfigError(f"{where}: give exactly one of 'key' and 'key_sha256'")
    if key is not None:
        if not isinstance(key, str) or not key or key != key.strip() or any(c.isspace() for c in key):
            raise ConfigError(f"{where}: 'key' must be a non-empty string without spaces")
        return digest(key)
    if not isinstance(hashed, str) or not _SHA256.match(hashed.lower()):
        raise ConfigError(f"{where}: 'key_sha256' must be 64 hexadecimal digits (the SHA-256 of the key)")
    return bytes.fromhex(hashed)


def parse_entry(name: str, body: Any, source: str) -> KeyEntry:
    where = _where(source, name)
    if not _NAME.match(name):
        raise ConfigError(
            f"{where}: a tenant name is 1-64 letters, digits or ._@:- and starts with a letter or digit"
        )
    if not isinstance(body, dict):
        raise ConfigError(f"{where}: must be an object with 'key' or 'key_sha256'")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise ConfigError(f"{where}: unknown field '{unknown[0]}' (valid: {', '.join(sorted(_FIELDS))})")
    priority = body.get("priority", "normal")
    if priority not in PRIORITIES:
        raise ConfigError(f"{where}: 'priority' must be one of {', '.join(PRIORITIES)}, not {priority!r}")
    weight = body.get("weight", 1)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 < weight <= MAX_WEIGHT:
        raise ConfigError(f"{where}: 'weight' must be a number above 0 and at most {MAX_WEIGHT:g}")
    admin = body.get("admin", False)
    if not isinstance(admin, bool):
        raise ConfigError(f"{where}: 'admin' must be true or false")
    limits = Limits(
        _count(body.get("requests_per_minute"), where, "requests_per_minute"),
        _count(body.get("tokens_per_minute"), where, "tokens_per_minute"),
        _count(body.get("max_concurrent"), where, "max_concurrent"),
    )
    tenant = Tenant(name, float(weight), cast(Priority, priority), _models(body.get("models"), where))
    return KeyEntry(tenant, _digest_of(body, where), limits, admin)


def parse_keys(data: Any, source: str) -> Keys:
    """The entries of a parsed keys file; raises `ConfigError`."""
    if not isinstance(data, dict):
        raise ConfigError(f"keys file {source}: must be an object of tenant name -> entry")
    entries = tuple(parse_entry(str(name), body, source) for name, body in data.items())
    seen: dict[bytes, str] = {}
    for entry in entries:
        if entry.digest in seen:
            raise ConfigError(
                f"{_where(source, entry.name)}: has the same key as entry '{seen[entry.digest]}'"
            )
        seen[entry.digest] = entry.name
    return Keys(entries, source)


def _toml(text: str) -> Any:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10 only
        try:
            import tomli as tomllib
        except ImportError:
            raise ValueError("TOML needs Python 3.11 or the tomli package; use a JSON keys file") from None
    return tomllib.loads(text)


def load_keys(path: str | Path) -> Keys:
    """Reads and validates a keys file (`.toml`: TOML, anything else: JSON); raises `ConfigError`."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"keys file {file}: cannot be read ({exc.strerror or exc})") from None
    try:
        data = _toml(text) if file.suffix.lower() == ".toml" else json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"keys file {file}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except ValueError as exc:  # tomllib.TOMLDecodeError is a ValueError
        raise ConfigError(f"keys file {file}: invalid TOML: {exc}") from None
    return parse_keys(data, str(file))
