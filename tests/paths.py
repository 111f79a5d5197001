"""The paths the tests read, from one place, so that a test file can move without breaking one."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).parent  # the support modules, data/ and node/
ROOT = TESTS.parent  # the repository
DATA = TESTS / "data"  # the specs the responses are checked against
CONFIGS = ROOT / "configs"  # the configs the repository ships
DEPLOY = ROOT / "deploy" / "kubernetes"  # the kustomizations and manifests
