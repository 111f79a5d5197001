from __future__ import annotations

import re

from paths import ROOT


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_test_one() -> None:
    readme = (ROOT / "README.md").read_text()
    setup = re.search(r"## Set up\n(.*?)\n## ", readme, re.S)
    assert setup is not None
    commands = re.findall(r"```(?:bash|sh)\n(.*?)\n```", setup.group(1), re.S)
    assert len(commands) == 2
    serve, test = commands
    assert "llmserve multi-model --config configs/default.json" in serve
    assert test.rstrip().endswith("python3 -m pytest")
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test in ci
