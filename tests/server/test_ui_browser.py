"""The dashboard at /ui in a real headless Chromium (Debian's, driven by Playwright): it lists every
model with its state, follows loads made through the API without a reload, its buttons change the
server's state, a loading model shows its progress and an evicted one why, the playground streams and
its Stop button cancels the generation on the server, the page works by keyboard, reads at WCAG
contrast and fits 1400x900 and a phone; with an API key it shows nothing until one is entered. Every
test checks that no request left the server's origin and that the console stayed free of errors.

One live server (tiny models: alpha real, beta real but slowed, gamma scripted with a gated load) and
one browser for the module; the slow tier adds SmolLM2 streaming in the playground."""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes import Parking, ScriptedEngine, Slowed
from model_configs import config, model, plain, require_smollm2
from paths import CONFIGS
from playwright.sync_api import Browser, Page
from servers import live_server
from ui_browser import (
    CONTRAST,
    PHONE,
    Watched,
    api_status,
    card,
    figures_of,
    shown_bytes,
    wait_state,
    watched_page,
)

from llmserve.config.entries import ModelConfig, load_config
from llmserve.engine import load_engine
from llmserve.engine.base import Engine
from llmserve.engine.progress import report
from llmserve.models.residency import Residency
from llmserve.server import create_app

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
    assert page.locator("#usage").is_hidden() and page.locator("#usage-link").is_hidden()  # no tenants
    assert page.locator("#admin-note").is_hidden()


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
    facts = card(page, "alpha")
    assert facts.locator('[data-field="kind"]').inner_text() == "Plain on transformers"
    [(device, size)] = figures_of(site.base, "alpha")["footprint"].items()
    held = f"{device} {shown_bytes(size)}"  # measured per device (the figures right after the event)
    facts.locator(f'[data-field="memory"]:text-is("{held}")').wait_for()
    assert facts.locator('[data-field="quantization"]').inner_text() == "none"


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
    loads = page.locator('#event-log li[data-model="alpha"]:has-text("loading → loaded")')
    before = loads.count()
    card(page, "alpha").locator('[data-action="reload"]').click()  # an unload, then a load
    loads.nth(before).wait_for(timeout=30_000)
    assert page.locator('#event-log li[data-model="alpha"]:has-text("loaded → unloading")').count() >= 2
    wait_state(page, "alpha", "loaded", timeout=10_000)


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
        page.get_by_label("Show events of").select_option("alpha")  # the log, filtered by model
        shown = page.locator("#event-log li:visible")
        assert shown.count() > 0 and set(
            shown.evaluate_all("(items) => items.map((i) => i.dataset.model)")
        ) == {"alpha"}
        assert page.locator('#event-log li[data-model="beta"]').count() > 0  # there, hidden
        page.get_by_label("Show events of").select_option("")
        assert page.locator('#event-log li[data-model="beta"]:visible').count() > 0
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
    user = {"role": "user", "content": "hi"}
    body = {
        "model": "alpha",
        "messages": [{"role": "system", "content": "Be brief."}, user],
        "temperature": 0,
        "max_tokens": 8,
    }
    expected = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=60).json()["choices"][0][
        "message"
    ]
    page.select_option("select[name=model]", "alpha")
    page.fill('input[name="temperature"]', "0")
    page.fill('input[name="max_tokens"]', "8")
    page.fill("textarea[name=system]", "Be brief.")
    page.fill("textarea[name=prompt]", "hi")
    with page.expect_request(f"{base}/v1/chat/completions") as sent:
        page.click('[data-action="send"]')
    asked = json.loads(sent.value.post_data or "{}")
    assert (asked["messages"], asked["temperature"], asked["max_tokens"]) == (body["messages"], 0, 8)
    page.wait_for_selector("#answer-stats:has-text('served by alpha')", timeout=30_000)
    assert page.locator("[data-role=assistant]").inner_text() == expected["content"]
    stats = page.locator("#answer-stats").inner_text()
    assert stats.startswith("done") and "TTFT" in stats and "8 tokens" in stats
    # the answer's time to first token reaches the model's TTFT chart on the next tick
    page.wait_for_selector('#charts [data-unit-id="alpha"] [data-series="ttft"]:not([data-value=""])')
    page.fill("textarea[name=system]", "")


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
    # while it decodes: the card counts it as running, the charts show its tokens/s and the queue
    card(page, "beta").locator('[data-field="queue"]:has-text("1 running")').wait_for()
    row = '#charts [data-unit-id="beta"]'
    page.wait_for_selector(f'{row} [data-series="tps"]:not([data-value="0"]):not([data-value=""])')
    page.wait_for_selector(f'{row} [data-series="queue"][data-value="1"]')
    assert float(page.locator(f'{row} [data-series="tps"]').get_attribute("data-value") or 0) > 0
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


def test_each_card_counts_what_it_served_and_its_keep_alive_down(site: Watched) -> None:
    page, base = site.page, site.base
    body = {"model": "alpha", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    response = httpx.post(f"{base}/v1/chat/completions", json={**body, "keep_alive": "10m"}, timeout=60)
    assert response.status_code == 200
    served = figures_of(base, "alpha")
    text = f"{served['requests']} requests · {served['decoded_tokens']} tokens decoded"
    card(page, "alpha").locator(f'[data-field="served"]:has-text("{text}")').wait_for()
    expiry = card(page, "alpha").locator('[data-field="expiry"]')
    expiry.locator(":scope:has-text('unloads in 9 min')").wait_for()

    def left() -> int:
        minutes, seconds = re.fullmatch(r"unloads in (\d+) min (\d+) s", expiry.inner_text()).groups()  # type: ignore[union-attr]
        return int(minutes) * 60 + int(seconds)

    first, deadline = left(), time.monotonic() + 5
    while left() >= first:  # the next figures event, a second on
        assert time.monotonic() < deadline, "keep_alive does not count down"
        time.sleep(0.1)
    assert 590 <= left() < first


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


def test_an_offloaded_model_shows_as_parked_until_a_request_wakes_it(browser: Browser) -> None:
    parking = dataclasses.replace(config(float("inf"), "m"), unload_mode="offload")
    app = create_app([parking], "m", factory=lambda c: Parking(["a"]), preload="none")
    with live_server(app) as url, watched_page(browser, url) as watched:
        page = watched.page
        load(url, "m")
        page.goto(f"{url}/ui/")
        wait_state(page, "m", "loaded", timeout=5_000)
        assert httpx.post(f"{url}/v1/models/unload", json={"model_id": "m"}, timeout=30).status_code == 200
        wait_state(page, "m", "parked", timeout=5_000)
        assert "parked in CPU memory" in card(page, "m").inner_text()
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        assert httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30).status_code == 200
        wait_state(page, "m", "loaded", timeout=5_000)
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
