"""The terminal chat, driven as a user drives it: in a pseudo-terminal (pexpect) and through a pipe."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import pexpect
import pytest
from cli_run import ENV, piped
from fakes import Factory, Slowed, assert_cancelled
from model_configs import plain, write_config
from paths import CONFIGS
from servers import free_port, live_server
from tiny import reference_greedy

from llmserve.config.entries import ModelConfig, PlainSpec
from llmserve.config.sampling import Sampling
from llmserve.engine import load_engine
from llmserve.server import create_app


def spawn(*args: str) -> pexpect.spawn:
    return pexpect.spawn(
        sys.executable, ["-m", "llmserve", *args], env=ENV, encoding="utf-8", timeout=60, dimensions=(40, 200)
    )


def test_piped_mode_answers_each_line(tiny_dir: Path, tmp_path: Path) -> None:
    expected = reference_greedy(tiny_dir, [{"role": "user", "content": "hi"}], 8)[0]
    result = piped(
        "/temperature 0\n/max_tokens 8\nhi\n/models\n/temperature 9\n/nope\n",
        "-i",
        "multi-model",
        "--config",
        str(write_config(tmp_path, {"tiny": tiny_dir})),
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no logs, no progress bars in the chat
    assert result.stdout.splitlines() == [
        "(temperature = 0.0)",
        "(max_tokens = 8)",
        *expected.split("\n"),
        "* tiny  [loaded]",
        "/temperature takes a number from 0 to 2; it stays 0.0",
        "unknown command /nope; /help lists the commands",
    ]


# The settings of a tiny model whose config entry sets greedy decoding and a 5-token cap.
GREEDY_5 = {"temperature": 0, "max_tokens": 5}


def settings_shown(model: str) -> list[str]:
    return [
        f"settings for {model} (/NAME VALUE sets one for this chat, /NAME default resets it):",
        "  temperature         0.0     model default (config)",
        "  top_p               1.0     model default (API)",
        "  top_k               0       model default (API)",
        "  min_p               0.0     model default (API)",
        "  repetition_penalty  1.0     model default (API)",
        "  max_tokens          5       model default (config)",
    ]


def test_the_chat_answers_at_the_models_defaults_and_shows_them(tiny_dir: Path, tmp_path: Path) -> None:
    expected = reference_greedy(tiny_dir, [{"role": "user", "content": "hi"}], 5)[0]
    config = write_config(tmp_path, {"tiny": tiny_dir}, sampling=GREEDY_5)
    result = piped("/settings\nhi\n", "-i", "multi-model", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [*settings_shown("tiny"), *expected.split("\n")]


def test_the_chat_shows_a_servers_defaults(tiny_dir: Path) -> None:
    expected = reference_greedy(tiny_dir, [{"role": "user", "content": "hi"}], 5)[0]
    model = ModelConfig(
        label="tiny", api_id="tiny", spec=PlainSpec(model_id=str(tiny_dir)), sampling=Sampling(**GREEDY_5)
    )
    with live_server(create_app([model], "tiny", preload="none")) as url:
        result = piped("/settings\n/temperature 1.5\n/settings\n", "chat", "--url", url, "--model", "tiny")
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == [
            *settings_shown("tiny"),
            "(temperature = 1.5)",
            settings_shown("tiny")[0],
            "  temperature         1.5     set in this chat (model default 0.0, config)",
            *settings_shown("tiny")[2:],
        ]
        unset = piped("/temperature 1.5\n/temperature default\nhi\n", "chat", "--url", url)
        assert unset.stdout.splitlines() == [
            "(temperature = 1.5)",
            "(temperature = the model's default, 0.0)",
            *expected.split("\n"),
        ]


def test_plain_subcommand_chats_in_process(tiny_dir: Path) -> None:
    expected = reference_greedy(tiny_dir, [{"role": "user", "content": "hi"}], 5)[0]
    result = piped("/temperature 0\n/max_tokens 5\nhi\n", "-i", "plain", "-m", str(tiny_dir), "--alias", "t")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[2:] == expected.split("\n")


def test_a_model_that_fails_to_load_keeps_the_chat_alive(tiny_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_dir, broken)
    (broken / "config.json").write_text("{")
    cfg = write_config(tmp_path, {"tiny": tiny_dir, "broken": broken})
    result = piped("/model broken\n/max_tokens 2\nhi\n/models\n", "-i", "multi-model", "--config", str(cfg))
    assert result.returncode == 0
    assert result.stderr.startswith("error: loading model 'broken' failed: ")
    assert result.stderr.rstrip().endswith("(staying on tiny)")
    lines = result.stdout.splitlines()
    assert lines[0] == "(max_tokens = 2)"
    assert lines[-2:] == ["* tiny  [loaded]", "  broken  [internal_error]"]


def test_terminal_session_switches_models_and_exits_0(
    tiny_dir: Path, tiny_dir2: Path, tmp_path: Path
) -> None:
    child = spawn(
        "-i", "multi-model", "--config", str(write_config(tmp_path, {"tiny": tiny_dir, "tiny2": tiny_dir2}))
    )
    child.expect_exact("llmserve chat · tiny · in process · /help for commands, Ctrl-D to exit")
    child.expect_exact(">>> ")
    child.sendline("/models")
    child.expect(r"\* tiny  \[(loaded|reloading)\]\r\n  tiny2  \[unloaded\]")
    child.sendline("/model tiny2")
    child.expect_exact("(now chatting with tiny2)")
    child.sendline("/models")
    # tiny's preload may still be under way on a loaded machine
    child.expect(r"  tiny  \[(loaded|reloading)\]\r\n\* tiny2  \[loaded\]")
    child.sendline("/max_tokens 4")
    child.expect_exact("(max_tokens = 4)")
    child.sendline("hello there")
    child.expect_exact(">>> ")
    child.sendline("/top_p 0")
    child.expect_exact("/top_p takes a number above 0, up to 1; it stays the model's default, 1.0")
    child.sendline("/help")
    child.expect_exact("/unload ID         unload a model and free its memory")
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_ctrl_c_stops_the_answer_and_twice_at_the_prompt_exits(tiny_dir: Path) -> None:
    # Greedy on this model runs 200 tokens without an EOS: the answer is long enough to interrupt.
    assert not reference_greedy(tiny_dir, [{"role": "user", "content": "hi"}], 200)[3]
    factory = Factory(lambda c: Slowed(load_engine(c), 0.05))
    app = create_app([plain(tiny_dir, "tiny")], "tiny", factory=factory, preload="default")
    with live_server(app) as url:
        child = spawn("chat", "--url", url)
        child.expect_exact(f"llmserve chat · default · {url}")
        child.expect_exact(">>> ")
        child.sendline("/temperature 0")
        child.sendline("/max_tokens 200")
        child.expect_exact("(max_tokens = 200)")
        child.sendline("hi")
        child.expect_exact("hi\r\n")
        child.expect(r"\S")  # the answer has begun
        time.sleep(0.3)
        child.sendintr()
        child.expect_exact(" [interrupted]")
        child.expect_exact(">>> ")
        assert_cancelled(factory.engines[0], max_steps=150)
        child.sendintr()
        child.expect_exact("(press Ctrl-C again or Ctrl-D to exit)")
        child.sendintr()
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0


def test_a_server_that_is_not_there_keeps_the_chat_alive() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    child = spawn("chat", "--url", url)
    child.expect_exact(f"error: cannot reach {url} (ConnectError)")
    child.expect_exact(">>> ")
    child.sendline("hello")
    child.expect_exact(f"error: cannot reach {url} (ConnectError)")
    child.expect_exact(">>> ")
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_chat_url_must_be_http() -> None:
    result = piped("", "chat", "--url", "localhost:1234")
    assert result.returncode == 2
    assert result.stderr == "llmserve: error: --url 'localhost:1234' must start with http:// or https://\n"


@pytest.mark.slow
def test_smollm2_answers_paris_in_the_terminal() -> None:
    # the engine the README's serve command installs: transformers (the test command adds llama.cpp)
    child = spawn("-i", "multi-model", "--config", str(CONFIGS / "default.json"), "--engine", "transformers")
    child.timeout = 180
    child.expect_exact(">>> ")
    child.sendline("What is the capital of France?")  # at the config's defaults: no slash command first
    child.expect_exact("Paris")
    child.expect_exact(">>> ")
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_the_in_process_chat_honours_the_memory_flags(
    tiny_dir: Path, tiny_dir2: Path, tmp_path: Path
) -> None:
    """Found from outside: `-i` built its own registry without residency, so `--max-loaded-models 1` was
    accepted and ignored. The chat and the server are now built from one setup."""
    config = str(write_config(tmp_path, {"tiny": tiny_dir, "tiny2": tiny_dir2}))
    script = "/max_tokens 2\nhi\n/model tiny2\nhi\n/models\n"
    result = piped(script, "-i", "multi-model", "--config", config, "--max-loaded-models", "1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-2:] == ["  tiny  [unloaded]", "* tiny2  [loaded]"]
    result = piped(script, "-i", "multi-model", "--config", config)
    assert result.stdout.splitlines()[-2:] == ["  tiny  [loaded]", "* tiny2  [loaded]"]
