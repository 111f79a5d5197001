"""The dashboard at /ui in a real headless Chromium (Debian's, driven by Playwright): it lists every
model with its state, follows loads made through the API without a reload, its buttons change the
server's state, a loading model shows its progress and an evicted one why, the playground streams and
its Stop button cancels the generation on the server, the page works by keyboard, reads at WCAG
contrast and fits 1400x900 and a phone; with an API key it shows nothing until one is entered. Every
test checks that no request left the server's origin and that the console stayed free of errors.

One live server (tiny models: alpha real, beta real but slowed, gamma scripted with a gated load) and
one browser for the module; the slow tier adds SmolLM2 streaming in the playground."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes import ScriptedEngine, Slowed
from model_configs import config, model, plain, require_smollm2
from paths import CONFIGS
from playwright.sync_api import Browser, Page
from servers import live_server
from ui_browser import (
    PHONE,
    Watched,
    api_status,
    card,
    chromium,
    figures_of,
    wait_state,
    watched_page,
)

from llmserve.config.entries import ModelConfig, load_config
from llmserve.engine import load_engine
from llmserve.engine.base import Engine
from llmserve.engine.progress import report
from llmserve.models.residency import Residency
from llmserve.server import create_app
from llmserve.server.options import ServerOptions

GATE = threading.Event()  # gamma's load waits here, in its "weights" stage
KEY = "sk-ui-test"
MODELS = ("alpha", "beta", "gamma", "delta", "delta@1")  # delta: two versions, 2 the default


def factory(entry: ModelConfig) -> Engine:
    if entry.api_id == "gamma":
        report("weights", 0.4)
        GATE.wait(30)
        return ScriptedEngine(["g"])
    if entry.api_id == "delta":
        return ScriptedEngine(["d"])
    if entry.api_id == "omega":
        raise RuntimeError("no weights here")
    engine = load_engine(entry)
    return Slowed(engine, 0.05) if entry.api_id == "beta" else engine


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def base(tiny_dir: Path, tiny_dir2: Path) -> Iterator[str]:
    versions = [model("delta", "1"), model("delta", "2")]
    broken = config(float("inf"), "omega")  # its load always fails
    models = [
        plain(tiny_dir, "alpha"),
        plain(tiny_dir2, "beta"),
        config(float("inf"), "gamma"),
        *versions,
        broken,
    ]
    app = create_app(models, "alpha", factory=factory, preload="none", residency=Residency(2, wait=30))
    with live_server(app) as url:
        yield url
    GATE.set()


@pytest.fixture
def site(browser: Browser, base: str) -> Iterator[Watched]:
    """The dashboard in a new browser context, its cards rendered; the models as earlier tests left them."""
    with watched_page(browser, base) as watched:
        watched.page.goto(f"{base}/ui/")
        watched.page.wait_for_selector("article[data-model-id]")
        yield watched
        watched.assert_clean()


def unload(page: Page, base: str, *names: str) -> None:
    for name in names:
        if api_status(base, name) != "unloaded":
            response = httpx.post(f"{base}/v1/models/unload", json={"model_id": name}, timeout=30)
            assert response.status_code == 200
        wait_state(page, name, "unloaded", timeout=10_000)


def load(base: str, name: str) -> None:
    assert httpx.post(f"{base}/v1/models/reload", json={"model_id": name}, timeout=60).status_code == 200


def test_the_page_lists_every_model_with_its_state(site: Watched) -> None:
    page = site.page
    unload(page, site.base, *MODELS)  # as the server started (when this test runs first)
    assert page.locator("article[data-model-id]").count() == 6
    for name in MODELS:
        assert card(page, name).locator(".state").inner_text() == "unloaded"
        assert card(page, name).locator('[data-action="load"]').is_visible()
        assert card(page, name).locator('[data-action="unload"]').is_hidden()
    assert card(page, "delta@1").locator('[data-action="promote"]').is_visible()
    assert card(page, "delta").locator('[data-action="promote"]').is_hidden()  # the default already
    assert card(page, "alpha").get_by_text("default model").is_visible()
    page.wait_for_selector('#devices [data-device="cpu"]')
    options = page.locator("select[name=model] option").all_inner_texts()
    assert options == ["default", "alpha", "beta", "gamma", "delta@1", "delta", "omega"]
    assert page.locator("#connection").inner_text() == "live"


def test_a_load_through_the_api_appears_without_a_reload(site: Watched) -> None:
    page = site.page
    page.evaluate("window.sameDocument = true")
    unload(page, site.base, "alpha")
    load(site.base, "alpha")
    wait_state(page, "alpha", "loaded", timeout=5_000)
    page.wait_for_selector('#event-log li[data-model="alpha"]:has-text("loading → loaded")')
    card(page, "alpha").locator('[data-action="unload"]').wait_for()
    page.wait_for_selector('#devices .legend li:has-text("alpha")')
    assert page.evaluate("window.sameDocument") is True  # the same document: no reload happened


def test_unload_and_load_clicks_change_the_servers_state(site: Watched) -> None:
    page, base = site.page, site.base
    load(base, "alpha")
    wait_state(page, "alpha", "loaded", timeout=5_000)
    card(page, "alpha").locator('[data-action="unload"]').click()
    wait_state(page, "alpha", "unloaded", timeout=10_000)
    assert api_status(base, "alpha") == "unloaded"
    assert "unloaded on request" in card(page, "alpha").locator(".why").inner_text()
    card(page, "alpha").locator('[data-action="load"]').click()
    wait_state(page, "alpha", "loaded", timeout=30_000)
    assert api_status(base, "alpha") == "loaded"


def test_a_loading_model_shows_its_progress_and_an_evicted_one_why(site: Watched) -> None:
    page, base = site.page, site.base
    unload(page, base, "gamma")
    load(base, "alpha")
    load(base, "beta")  # --max-loaded-models 2: both fit; alpha is the least recently used
    wait_state(page, "beta", "loaded", timeout=5_000)
    page.wait_for_selector('#room:has-text("next to evict: alpha")')
    page.wait_for_selector('[data-device="slots"]:has-text("2 of 2 places taken")')
    GATE.clear()
    loader = threading.Thread(target=load, args=(base, "gamma"))
    loader.start()
    try:
        wait_state(page, "gamma", "loading", timeout=10_000)
        wait_state(page, "alpha", "unloaded", timeout=10_000)
        assert "evicted" in card(page, "alpha").locator(".why").inner_text()
        page.wait_for_selector('article[data-model-id="gamma"] .load-progress:has-text("weights · 40%")')
        page.wait_for_selector('#event-log li[data-model="alpha"]:has-text("evicted")')
    finally:
        GATE.set()
        loader.join(30)
    wait_state(page, "gamma", "loaded", timeout=10_000)


def test_a_failed_load_says_why_and_offers_a_retry(site: Watched) -> None:
    page = site.page
    site.expected.append("the server responded with a status of 500")  # Chromium logs the failed load
    card(page, "omega").locator('[data-action="load"]').click()
    wait_state(page, "omega", "failed", timeout=10_000)
    page.wait_for_selector("#notice:has-text('Load omega: loading model')")  # the API's own message
    assert "no weights here" in card(page, "omega").locator(".why").inner_text()
    retry = card(page, "omega").get_by_role("button", name="Retry omega")
    assert retry.get_attribute("data-action") == "load"
    page.click("#notice-close")
    retry.click()
    page.wait_for_selector("#notice:has-text('no weights here')")
    page.wait_for_selector('#event-log li.error[data-model="omega"]:has-text("failed")')


def test_promote_makes_a_version_the_default(site: Watched) -> None:
    page, base = site.page, site.base
    card(page, "delta@1").locator('[data-action="promote"]').click()
    page.wait_for_selector('article[data-unit-id="delta@1"][data-model-id="delta"][data-state="loaded"]')
    page.wait_for_selector('article[data-unit-id="delta@2"][data-model-id="delta@2"]')
    assert httpx.post(f"{base}/v1/models/status", json={"model_id": "delta"}).json()["model_id"] == "delta@1"
    assert card(page, "delta").get_by_text("version 1 (default)").is_visible()
    promote = {"model_id": "delta", "version": "2"}
    assert httpx.post(f"{base}/v1/models/promote", json=promote, timeout=30).status_code == 200
    page.wait_for_selector(
        'article[data-unit-id="delta@2"][data-model-id="delta"]'
    )  # another client's change


def test_the_playground_streams_the_models_answer(site: Watched) -> None:
    page, base = site.page, site.base
    body = {
        "model": "alpha",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0,
        "max_tokens": 8,
    }
    expected = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=60).json()["choices"][0][
        "message"
    ]
    page.select_option("select[name=model]", "alpha")
    page.fill('input[name="temperature"]', "0")
    page.fill('input[name="max_tokens"]', "8")
    page.fill("textarea[name=prompt]", "hi")
    page.click('[data-action="send"]')
    page.wait_for_selector("#answer-stats:has-text('served by alpha')", timeout=30_000)
    assert page.locator("[data-role=assistant]").inner_text() == expected["content"]
    stats = page.locator("#answer-stats").inner_text()
    assert stats.startswith("done") and "TTFT" in stats and "8 tokens" in stats


def test_stop_cancels_the_generation_on_the_server(site: Watched) -> None:
    page, base = site.page, site.base
    load(base, "beta")  # 0.05 s a token: 400 tokens would take 20 s
    page.select_option("select[name=model]", "beta")
    page.fill('input[name="temperature"]', "0")
    page.fill('input[name="max_tokens"]', "400")
    page.fill("textarea[name=prompt]", "hi")
    page.click('[data-action="send"]')
    answer = page.locator("[data-role=assistant]")
    deadline = time.monotonic() + 30
    while len(answer.inner_text()) < 4:  # (wait_for_function evaluates a string: the page's CSP forbids it)
        assert time.monotonic() < deadline, "no answer streamed"
        time.sleep(0.05)
    page.click('[data-action="stop"]')
    page.wait_for_selector("#answer-stats:has-text('stopped')")
    deadline = time.monotonic() + 5
    while figures_of(base, "beta")["running"]:
        assert time.monotonic() < deadline, "the server still runs the stopped generation"
        time.sleep(0.05)
    decoded = figures_of(base, "beta")["decoded_tokens"]
    time.sleep(0.3)
    assert figures_of(base, "beta")["decoded_tokens"] == decoded < 100  # nothing decodes for it any more
    assert page.locator('[data-action="send"]').is_enabled()


def test_it_works_by_keyboard(site: Watched) -> None:
    page, base = site.page, site.base
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"  # the first stop skips the header
    load(base, "alpha")
    wait_state(page, "alpha", "loaded", timeout=5_000)
    unload = page.get_by_role("button", name="Unload alpha")
    unload.focus()
    page.keyboard.press("Enter")
    wait_state(page, "alpha", "unloaded", timeout=10_000)
    assert api_status(base, "alpha") == "unloaded"
    page.get_by_label("Model", exact=True).select_option("alpha")
    page.get_by_label("Max tokens", exact=True).fill("4")
    page.get_by_label("Message", exact=True).fill("hello")
    page.get_by_label("Message", exact=True).press("Control+Enter")
    page.wait_for_selector("#answer-stats:has-text('done')", timeout=30_000)


CONTRAST = """() => {
  const luminance = (rgb) => {
    const [r, g, b] = rgb.map((c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const parse = (text) => (text.match(/[\\d.]+/g) || []).map(Number);
  const background = (node) => {
    for (let n = node; n; n = n.parentElement) {
      const c = parse(getComputedStyle(n).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] === 1)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const low = [];
  for (const node of document.querySelectorAll("body *")) {
    const own = [...node.childNodes].some((c) => c.nodeType === 3 && c.textContent.trim());
    if (!own || !node.checkVisibility() || node.closest("[disabled]")) continue;
    const fg = luminance(parse(getComputedStyle(node).color).slice(0, 3));
    const bg = luminance(background(node));
    const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
    if (ratio < 4.5) low.push(`${node.tagName}.${node.className}: ${ratio.toFixed(2)} '${node.textContent.trim().slice(0, 30)}'`);
  }
  return low;
}"""


def test_contrast_and_layout_at_1400x900_and_on_a_phone(site: Watched) -> None:
    page, base = site.page, site.base
    load(base, "alpha")
    wait_state(page, "alpha", "loaded", timeout=5_000)
    for size in ({"width": 1400, "height": 900}, PHONE):
        page.set_viewport_size(size)  # type: ignore[arg-type]
        page.wait_for_timeout(100)
        assert page.evaluate(CONTRAST) == []
        assert page.evaluate("document.documentElement.scrollWidth") <= size["width"]  # no sideways scroll
        for name in MODELS:
            box = card(page, name).bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= size["width"]


def test_with_an_api_key_it_shows_nothing_until_the_key_is_entered(browser: Browser) -> None:
    models: list[ModelConfig] = [config(float("inf"), "m")]
    app = create_app(
        models,
        "m",
        factory=lambda c: ScriptedEngine(["a"]),
        preload="none",
        options=ServerOptions(api_keys=(KEY,)),
    )
    with live_server(app) as url:
        with watched_page(browser, url) as watched:
            page = watched.page
            watched.expected.append("the server responded with a status of 401")  # the wrong key's answer
            page.goto(f"{url}/ui/")
            page.get_by_label("API key").wait_for()
            assert page.locator("main").is_hidden()
            assert page.locator("article[data-model-id]").count() == 0  # nothing was fetched
            page.get_by_label("API key").fill("wrong")
            page.get_by_role("button", name="Open the dashboard").click()
            page.wait_for_selector("#key-error:has-text('refused')")
            assert page.locator("main").is_hidden()
            page.get_by_label("API key").fill(KEY)
            page.get_by_role("button", name="Open the dashboard").click()
            wait_state(page, "m", "unloaded", timeout=5_000)
            card(page, "m").locator('[data-action="load"]').click()  # a POST with the key
            wait_state(page, "m", "loaded", timeout=10_000)
            page.reload()  # the key stays for this tab's session
            wait_state(page, "m", "loaded", timeout=5_000)
            watched.assert_clean()
        with watched_page(browser, url) as watched:  # a new session asks again
            watched.page.goto(f"{url}/ui/")
            watched.page.get_by_label("API key").wait_for()
            assert watched.page.locator("main").is_hidden()
            watched.assert_clean()


@pytest.mark.slow
def test_the_playground_streams_an_answer_from_smollm2(browser: Browser) -> None:
    require_smollm2()
    models = load_config(CONFIGS / "default.json")
    app = create_app(models, models[0].api_id, preload="default")
    with live_server(app) as url, watched_page(browser, url) as watched:
        page = watched.page
        page.goto(f"{url}/ui/")
        wait_state(page, "SmolLM2-135M-Instruct", "loaded", timeout=120_000)
        page.evaluate(
            """() => { window.pieces = 0; new MutationObserver(() => { window.pieces += 1; })
            .observe(document.getElementById('transcript'), {childList: true, subtree: true, characterData: true}); }"""
        )
        page.select_option("select[name=model]", "SmolLM2-135M-Instruct")
        page.fill('input[name="temperature"]', "0")
        page.fill("textarea[name=prompt]", "What is the capital of France?")
        page.click('[data-action="send"]')
        page.wait_for_selector("#answer-stats:has-text('done')", timeout=120_000)
        answer: Any = page.locator("[data-role=assistant]").inner_text()
        assert "Paris" in answer
        assert page.evaluate("window.pieces") > 5  # token by token, not one block
        stats = page.locator("#answer-stats").inner_text()
        assert "served by SmolLM2-135M-Instruct" in stats and "TTFT" in stats and "tokens/s" in stats
        watched.assert_clean()
