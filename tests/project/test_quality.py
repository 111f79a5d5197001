"""The project's own standards, enforced by the suite: ruff, ruff format, mypy --strict, module size."""

from __future__ import annotations

import subprocess
import sys

import pytest
from paths import ROOT


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "llmserve", "tests", "benchmarks"],
        ["ruff", "format", "--check", "llmserve", "tests", "benchmarks"],
        ["mypy"],
    ],
    ids=["ruff", "ruff-format", "mypy"],
)
def test_tool_is_clean(command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_modules_stay_small_and_torch_stays_behind_the_engine() -> None:
    for path in (ROOT / "llmserve").rglob("*.py"):
        text = path.read_text()
        # the wall of the standards (500); split by concept long before it, never just to pass it
        assert len(text.splitlines()) <= 500, f"{path} is over 500 lines: split it by concept"
        if path.parent.name != "engine":
            assert "import torch" not in text and "from transformers" not in text, path


def test_importing_llmserve_does_not_import_torch() -> None:
    code = "import sys, llmserve, llmserve.cli, llmserve.server; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
