from __future__ import annotations

import json
import signal
from pathlib import Path

import httpx
import pytest
from cli_run import one_line_error, run_cli
from model_configs import write_config
from servers import llmserve_process

from llmserve.build import setup_from_args
from llmserve.cli import build_parser, server_options


def test_missing_config_file(tmp_path: Path) -> None:
    line = one_line_error(run_cli("multi-model", "--config", str(tmp_path / "none.json")))
    assert (
        line
        == f"llmserve: error: {tmp_path / 'none.json'}: cannot read the config file (No such file or directory)"
    )


def test_bad_config_names_file_and_path(tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"m": {"Plain": {"model_id": "a/b"}, "dtype": "fp8"}}))
    line = one_line_error(run_cli("multi-model", "--config", str(config)))
    assert (
        line
        == f"llmserve: error: {config}: $.m.dtype: Input should be 'auto', 'float32', 'bfloat16' or 'float16'"
    )


def test_default_model_id_must_name_a_model(tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"m": {"Plain": {"model_id": "a/b"}}, "n": {"Plain": {"model_id": "c/d"}}}))
    line = one_line_error(run_cli("multi-model", "--config", str(config), "--default-model-id", "x/y"))
    assert (
        line == f"llmserve: error: {config}: --default-model-id 'x/y' names no model; valid choices: a/b, c/d"
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            (),
            "llmserve: error: the following arguments are required: {multi-model,plain,chat,ray} (see --help)",
        ),
        (
            ("multi-model",),
            "llmserve multi-model: error: the following arguments are required: --config (see --help)",
        ),
        (
            ("--port", "http", "plain", "-m", "a/b"),
            "llmserve: error: argument --port: 'http' is not a port number (see --help)",
        ),
        (
            ("plain", "-m", "a/b", "--preload", "some"),
            "llmserve plain: error: argument --preload: invalid choice: 'some' (choose from",
        ),
        (
            ("plain", "-m", "./not-here"),
            "llmserve: error: command line: $.model.Plain.model_id: local path './not-here' is not a directory",
        ),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(tmp_path: Path, args: tuple[str, ...], expected: str) -> None:
    line = one_line_error(run_cli(*args, cwd=tmp_path))
    assert line.startswith(expected)


def test_server_options_before_or_after_the_subcommand() -> None:
    parser = build_parser()
    args = parser.parse_args(["--host", "0.0.0.0", "--port", "9000", "plain", "-m", "a/b", "--port", "9001"])
    assert (args.host, args.port, args.log_level) == ("0.0.0.0", 9001, "info")
    args = parser.parse_args(["plain", "-m", "a/b", "--alias", "nice", "--dtype", "bfloat16"])
    assert (args.host, args.port) == ("127.0.0.1", 1234)
    setup = setup_from_args(args)
    [model], default = setup.models, setup.default_id
    assert (model.api_id, model.dtype, default) == ("nice", "bfloat16", "nice")
    assert server_options(args).allow_remote_images is False
    args = parser.parse_args(["plain", "-m", "a/b", "--allow-remote-images"])
    assert server_options(args).allow_remote_images is True
    assert server_options(
        parser.parse_args(["--allow-remote-images", "plain", "-m", "a/b"])
    ).allow_remote_images


def test_serves_a_config_and_stops_cleanly_on_sigterm(tiny_dir: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path, {"tiny": tiny_dir})
    with llmserve_process("multi-model", "--config", str(config), capture=True) as (base, process):
        body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
        response = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=60)
        assert response.status_code == 200
        assert response.json()["usage"]["completion_tokens"] <= 3
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr
        assert "Traceback" not in stderr
