"""The real `llmserve` command run to its end: its exit and one-line errors, and the chat fed through a
pipe."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# the terminal chat's environment: offline, and a terminal without escape sequences
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TERM": "dumb"}


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmserve", *args], capture_output=True, text=True, timeout=60, cwd=cwd
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def piped(stdin: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmserve", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
