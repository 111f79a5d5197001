"""Model-name aliases: `"model_aliases"` glob patterns per config entry and `--model-alias PATTERN=MODEL`
on the command line, applied by the registry's resolve after exact names (so every API gets them)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from app_calls import HELLO
from cli_run import one_line_error, run_cli
from fakes import scripted
from model_configs import model
from starlette.testclient import TestClient

from llmserve.build import setup_from_args
from llmserve.cli import build_parser
from llmserve.config.entries import load_config
from llmserve.errors import ConfigError, ModelNotFound
from llmserve.models.registry import ModelRegistry
from llmserve.server import create_app


def config(tmp_path: Path, entries: dict[str, dict[str, object]]) -> Path:
    path = tmp_path / "models.json"
    body = {
        label: {"Plain": {"model_id": f"org/{label}"}, "alias": label, **extra}
        for label, extra in entries.items()
    }
    path.write_text(json.dumps(body))
    return path


def test_config_patterns_route_unknown_names_and_exact_ids_win(tmp_path: Path) -> None:
    path = config(
        tmp_path,
        {"big": {"model_aliases": ["claude-*"]}, "small": {"model_aliases": ["*-haiku-*"]}, "claude-x": {}},
    )
    models = load_config(path)
    assert [m.model_aliases for m in models] == [("claude-*",), ("*-haiku-*",), ()]
    registry = ModelRegistry(models, "big", scripted(["x"]))
    assert registry.resolve("claude-sonnet-4-5-20250929").unit_id == "big"
    assert registry.resolve("claude-x").unit_id == "claude-x"  # an exact id wins over a pattern
    assert registry.resolve("claude-3-haiku-20240307").unit_id == "big"  # the first entry's pattern first
    assert registry.resolve("gpt-haiku-1").unit_id == "small"
    with pytest.raises(ModelNotFound) as missing:
        registry.resolve("gpt-4o")
    assert "claude-*" not in missing.value.message  # aliases are not models


def test_a_pattern_follows_the_default_version_of_a_versioned_id(tmp_path: Path) -> None:
    path = tmp_path / "models.json"
    path.write_text(
        json.dumps(
            {
                "v1": {
                    "Plain": {"model_id": "org/m"},
                    "alias": "m",
                    "version": "1",
                    "model_aliases": ["claude-*"],
                },
                "v2": {
                    "Plain": {"model_id": "org/m2"},
                    "alias": "m",
                    "version": "2",
                    "default_version": True,
                },
            }
        )
    )
    registry = ModelRegistry(load_config(path), "m", scripted(["x"]))
    assert registry.resolve("claude-opus-4").unit_id == "m@2"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"model_aliases": "claude-*"}, "$.big.model_aliases"),
        ({"model_aliases": [""]}, "$.big.model_aliases"),
        ({"model_aliases": ["default"]}, "$.big.model_aliases"),
    ],
)
def test_bad_patterns_are_config_errors(tmp_path: Path, extra: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(config(tmp_path, {"big": extra}))
    assert f": {expected}: " in str(info.value) and "\n" not in str(info.value)


def test_one_pattern_routed_to_two_models_is_a_config_error(tmp_path: Path) -> None:
    path = config(
        tmp_path, {"big": {"model_aliases": ["claude-*"]}, "small": {"model_aliases": ["claude-*"]}}
    )
    with pytest.raises(
        ConfigError, match=r"\$\.small\.model_aliases: pattern 'claude-\*' already routes to 'big'"
    ):
        load_config(path)


def test_command_line_aliases(tmp_path: Path) -> None:
    path = config(tmp_path, {"big": {}, "small": {}})
    parser = build_parser()
    args = parser.parse_args(
        [
            "multi-model",
            "--config",
            str(path),
            "--model-alias",
            "claude-*=default",
            "--model-alias",
            "*haiku*=small",
        ]
    )
    models = setup_from_args(args).models
    assert [m.model_aliases for m in models] == [("claude-*",), ("*haiku*",)]
    args = parser.parse_args(["plain", "-m", "a/b", "--alias", "nice", "--model-alias", "claude-*=nice"])
    assert setup_from_args(args).models[0].model_aliases == ("claude-*",)
    args = parser.parse_args(["multi-model", "--config", str(path), "--model-alias", "claude-*=nope"])
    with pytest.raises(ConfigError, match="'nope' names no model; valid choices: default, big, small"):
        setup_from_args(args)


def test_an_alias_to_an_unknown_model_exits_2_with_one_line(tmp_path: Path) -> None:
    path = config(tmp_path, {"big": {}})
    line = one_line_error(run_cli("multi-model", "--config", str(path), "--model-alias", "claude-*=nope"))
    assert (
        line
        == "llmserve: error: --model-alias 'claude-*=nope': 'nope' names no model; valid choices: default, big"
    )
    line = one_line_error(run_cli("multi-model", "--config", str(path), "--model-alias", "claude-*"))
    assert "is not PATTERN=MODEL" in line


def test_every_api_resolves_an_alias_and_v1_models_lists_none() -> None:
    aliased = replace(model("m"), model_aliases=("claude-*",))
    app = create_app([aliased, model("other")], "other", factory=scripted(["x"]), preload="none")
    with TestClient(app) as client:
        chat = client.post("/v1/chat/completions", json={**HELLO, "model": "claude-haiku-4-5"})
        assert chat.status_code == 200 and chat.json()["model"] == "m"
        messages = client.post(
            "/v1/messages",
            json={
                "model": "claude-sonnet-4-5",
                "max_tokens": 2,
                "messages": [{"role": "user", "content": "hi"}],
            },
        )
        assert messages.status_code == 200 and messages.json()["model"] == "m"
        assert [card["id"] for card in client.get("/v1/models").json()["data"]] == ["default", "m", "other"]
        assert client.post("/v1/chat/completions", json={**HELLO, "model": "gpt-4o"}).status_code == 404
