"""What the browser tests of the dashboard share: Debian's Chromium driven by Playwright (no browser
download), a page that records every request leaving the server's origin (and blocks it) and every
console error, and the waits on the API's side."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, Route, sync_playwright

DESKTOP = {"width": 1400, "height": 900}
PHONE = {"width": 390, "height": 844}
# every visible text's contrast ratio under 4.5:1 (WCAG AA), as "TAG.class: ratio 'text'"
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


def chromium_path() -> str:
    """Debian's chromium (.ci/run installs it); missing, it fails under CI and skips elsewhere."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: .ci/run installs it (apt-get install -y chromium)")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    return path


@contextmanager
def chromium() -> Iterator[Browser]:
    path = chromium_path()
    driver: Playwright = sync_playwright().start()
    try:
        browser = driver.chromium.launch(executable_path=path, headless=True)
        try:
            yield browser
        finally:
            browser.close()
    finally:
        driver.stop()


@dataclass
class Watched:
    """A page on `base` and what it did: requests elsewhere (blocked) and console errors."""

    page: Page
    base: str
    foreign: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    expected: list[str] = field(default_factory=list)  # console errors a test causes on purpose

    def assert_clean(self) -> None:
        assert self.foreign == [], f"requests left the server's origin: {self.foreign}"
        errors = [e for e in self.errors if not any(text in e for text in self.expected)]
        assert errors == [], f"console errors: {errors}"


@contextmanager
def watched_page(browser: Browser, base: str, viewport: dict[str, int] = DESKTOP) -> Iterator[Watched]:
    """A new browser context (its own session storage) with one page."""
    context = browser.new_context(viewport=viewport)  # type: ignore[arg-type]
    page = context.new_page()
    watched = Watched(page, base)

    def local(url: str) -> bool:
        return url.startswith((f"{base}/", "data:"))

    def block(route: Route) -> None:
        watched.foreign.append(route.request.url)
        route.abort()

    def console(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            watched.errors.append(f"{message.type}: {message.text}")

    context.route(lambda url: not local(url), block)
    page.on("console", console)
    page.on("pageerror", lambda error: watched.errors.append(f"page error: {error}"))
    page.on("requestfailed", lambda r: None if local(r.url) else watched.foreign.append(r.url))
    try:
        yield watched
    finally:
        context.close()


def card(page: Page, model_id: str) -> Any:
    return page.locator(f'article[data-model-id="{model_id}"]')


def wait_state(page: Page, model_id: str, state: str, timeout: float = 30_000) -> None:
    page.wait_for_selector(f'article[data-model-id="{model_id}"][data-state="{state}"]', timeout=timeout)


def api_status(base: str, model_id: str, headers: dict[str, str] | None = None) -> str:
    response = httpx.post(f"{base}/v1/models/status", json={"model_id": model_id}, headers=headers)
    return str(response.json()["status"])


def wait_api(base: str, model_id: str, status: str, headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + 30
    while api_status(base, model_id, headers) != status:
        assert time.monotonic() < deadline, f"{model_id} never became {status}"
        time.sleep(0.05)


def figures_of(base: str, unit: str) -> dict[str, Any]:
    [model] = [m for m in httpx.get(f"{base}/v1/figures").json()["models"] if m["id"] == unit]
    return dict(model)


def shown_bytes(n: int) -> str:
    """A size as the page writes it (format.js `bytes`): binary units, 2 decimals below 10, else 1."""
    units = ["B", "KiB", "MiB", "GiB", "TiB"]
    value, unit = float(n), 0
    while abs(value) >= 1024 and unit < len(units) - 1:
        value /= 1024
        unit += 1
    if unit == 0:
        return f"{n} B"
    return f"{value:.{2 if value < 10 else 1}f} {units[unit]}"
