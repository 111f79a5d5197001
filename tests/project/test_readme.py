from __future__ import annotations

import re

from paths import ROOT

INSTALL = "scripts/install.sh"


def setup_commands() -> tuple[str, str]:
    readme = (ROOT / "README.md").read_text()
    setup = re.search(r"## Set up\n(.*?)\n## ", readme, re.S)
    assert setup is not None
    commands = re.findall(r"```(?:bash|sh)\n(.*?)\n```", setup.group(1), re.S)
    assert len(commands) == 2
    serve, test = commands
    return serve, test


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_test_one() -> None:
    serve, test = setup_commands()
    assert "llmserve multi-model --config configs/default.json" in serve
    assert test.rstrip().endswith("python3 -m pytest")
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test in ci


def test_the_readme_ci_and_the_dockerfile_install_with_the_one_script() -> None:
    """The README's two commands, .ci/run (through the test command) and the Dockerfile install with
    scripts/install.sh in its two modes, so CI exercises the steps a newcomer and the image take."""
    serve, test = setup_commands()
    assert serve.startswith(f"{INSTALL} serve && ")
    assert test.startswith(f"{INSTALL} test && ")
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG MODE=serve$", dockerfile, re.M)  # the image's mode, by default the README's
    assert re.search(
        rf'^RUN LLMSERVE_TORCH_INDEX="\$\{{TORCH_INDEX\}}" {re.escape(INSTALL)} "\$\{{MODE\}}"$',
        dockerfile,
        re.M,
    )
    for text in (serve, test, (ROOT / ".ci" / "run").read_text(), dockerfile):
        assert "pip install" not in text, "install through scripts/install.sh, not around it"
