from __future__ import annotations

import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
# converted GGUF copies go to a fresh directory per test session, never the user's cache
os.environ["LLMSERVE_CACHE_DIR"] = tempfile.mkdtemp(prefix="llmserve-cache-")

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny import build_model

    return build_model(tmp_path_factory.mktemp("models") / "tiny-chat")


@pytest.fixture(scope="session")
def tiny_dir2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny import build_model

    return build_model(tmp_path_factory.mktemp("models") / "tiny-chat-2", seed=1)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium (Debian's, through Playwright) per dashboard test module. Not per session:
    Playwright's sync API runs an event loop in the main thread while it is open, and every later test
    that calls asyncio.run() would fail with "cannot be called from a running event loop"."""
    from ui_browser import chromium

    with chromium() as launched:
        yield launched
