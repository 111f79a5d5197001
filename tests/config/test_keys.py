"""llmserve/config/keys.py: the keys file in JSON and TOML, its one-line errors naming the file and the
entry, model scopes, and keys compared only as hashes, every one of them, in constant time."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cli_run import one_line_error, run_cli

import llmserve.config.keys as keys_module
from llmserve.config.keys import Limits, Tenant, load_keys, parse_keys
from llmserve.errors import ConfigError

ALICE = {
    "key": "sk-alice-1",
    "models": ["smol", "tiny*"],
    "requests_per_minute": 60,
    "tokens_per_minute": 20000,
    "max_concurrent": 4,
    "priority": "normal",
    "weight": 1,
    "admin": False,
}
OPS_HASH = hashlib.sha256(b"sk-ops").hexdigest()
TOML = f"""
[alice]
key = "sk-alice-1"
models = ["smol", "tiny*"]
requests_per_minute = 60
tokens_per_minute = 20000
max_concurrent = 4
priority = "normal"
weight = 1
admin = false

[ops]
key_sha256 = "{OPS_HASH}"
models = ["*"]
admin = true
"""


def test_json_and_toml_read_the_same(tmp_path: Path) -> None:
    (tmp_path / "keys.json").write_text(
        json.dumps({"alice": ALICE, "ops": {"key_sha256": OPS_HASH.upper(), "models": ["*"], "admin": True}})
    )
    (tmp_path / "keys.toml").write_text(TOML)
    for name in ("keys.json", "keys.toml"):
        keys = load_keys(tmp_path / name)
        assert keys.source == str(tmp_path / name)
        alice, ops = keys.entries
        assert alice.tenant == Tenant("alice", 1.0, "normal", ("smol", "tiny*"))
        assert alice.limits == Limits(60, 20000, 4) and not alice.admin
        assert alice.digest == hashlib.sha256(b"sk-alice-1").digest()
        assert ops.admin and ops.limits == Limits() and not ops.limits.any
        assert keys.find("sk-ops") is ops and keys.find("sk-alice-1") is alice
        assert keys.find("sk-alice-2") is None and keys.find("") is None


def test_defaults_and_scopes() -> None:
    [entry] = parse_keys({"bob": {"key": "k"}}, "f.json").entries
    assert entry.tenant == Tenant("bob", 1.0, "normal", ("*",)) and entry.limits == Limits()
    scoped = Tenant("t", models=("smol", "tiny*", "big@2"))
    assert scoped.may_use("smol", "smol@3")  # every version of smol
    assert scoped.may_use("tiny-chat", "tiny-chat")
    assert scoped.may_use("big", "big@2") and not scoped.may_use("big", "big@1")
    assert not scoped.may_use("smollm", "smollm")
    assert [Tenant("x", priority=p).rank for p in ("high", "normal", "low")] == [0, 1, 2]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"alice": {}}, "entry 'alice': give exactly one of 'key' and 'key_sha256'"),
        ({"alice": {"key": "a", "key_sha256": OPS_HASH}}, "entry 'alice': give exactly one of"),
        ({"alice": {"key": "a b"}}, "entry 'alice': 'key' must be a non-empty string without spaces"),
        ({"alice": {"key_sha256": "abc"}}, "entry 'alice': 'key_sha256' must be 64 hexadecimal digits"),
        ({"alice": {"key": "a", "model": ["x"]}}, "entry 'alice': unknown field 'model' (valid: admin, key,"),
        (
            {"alice": {"key": "a", "priority": "urgent"}},
            "entry 'alice': 'priority' must be one of high, normal",
        ),
        (
            {"alice": {"key": "a", "weight": 0}},
            "entry 'alice': 'weight' must be a number above 0 and at most",
        ),
        ({"alice": {"key": "a", "weight": True}}, "entry 'alice': 'weight' must be a number"),
        ({"alice": {"key": "a", "admin": "yes"}}, "entry 'alice': 'admin' must be true or false"),
        ({"alice": {"key": "a", "requests_per_minute": 0}}, "entry 'alice': 'requests_per_minute' must be a"),
        ({"alice": {"key": "a", "max_concurrent": 1.5}}, "entry 'alice': 'max_concurrent' must be a whole"),
        ({"alice": {"key": "a", "models": "smol"}}, "entry 'alice': 'models' must be a list of model names"),
        ({"alice": {"key": "a", "models": [""]}}, "entry 'alice': 'models' must be a list"),
        ({"alice": "sk-1"}, "entry 'alice': must be an object with 'key' or 'key_sha256'"),
        ({"-x": {"key": "a"}}, "entry '-x': a tenant name is 1-64 letters"),
        (
            {"a": {"key": "k"}, "b": {"key_sha256": hashlib.sha256(b"k").hexdigest()}},
            "entry 'b': has the same",
        ),
        (["alice"], "must be an object of tenant name -> entry"),
    ],
)
def test_each_problem_is_one_line_naming_the_file_and_entry(body: Any, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_keys(body, "/etc/keys.json")
    text = str(error.value)
    assert text.startswith("keys file /etc/keys.json: ") and message in text, text
    assert "\n" not in text


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"keys file .*missing.json: cannot be read"):
        load_keys(tmp_path / "missing.json")
    (tmp_path / "k.json").write_text('{"a": ')
    with pytest.raises(ConfigError, match=r"keys file .*k.json: invalid JSON at line 1 column 7"):
        load_keys(tmp_path / "k.json")
    (tmp_path / "k.toml").write_text("[a\n")
    with pytest.raises(ConfigError, match=r"keys file .*k.toml: invalid TOML"):
        load_keys(tmp_path / "k.toml")


def test_every_key_is_compared_as_a_hash_without_an_early_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Timing: the presented key is hashed, and its hash is compared with every entry's in constant time
    (hmac.compare_digest), also when the first entry matches: how long a lookup takes tells nothing."""
    keys = parse_keys({name: {"key": f"sk-{name}"} for name in ("a", "b", "c")}, "k.json")
    compared: list[tuple[bytes, bytes]] = []
    real = keys_module.hmac.compare_digest

    def spy(left: bytes, right: bytes) -> bool:
        compared.append((left, right))
        return real(left, right)

    monkeypatch.setattr(keys_module.hmac, "compare_digest", spy)
    for given in ("sk-a", "sk-c", "sk-nobody"):
        compared.clear()
        keys.find(given)
        assert [right for _, right in compared] == [e.digest for e in keys.entries]
        assert {left for left, _ in compared} == {hashlib.sha256(given.encode()).digest()}


def test_the_command_line_refuses_a_bad_keys_file_with_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "keys.json"
    bad.write_text(json.dumps({"alice": {"key": "a", "weight": -1}}))
    line = one_line_error(run_cli("--keys", str(bad), "plain", "-m", str(tmp_path)))
    assert line == (
        f"llmserve: error: keys file {bad}: entry 'alice': 'weight' must be a number above 0 and at most 1000"
    )
