"""The dashboard at /ui with API keys, in a real headless Chromium (the session's one browser): it shows
nothing until a key is entered; a tenant's key sees only its models and their events; an admin action
with a key without admin rights is refused on the model's card, in a role=alert that says why; the usage
panel shows the server's own counters per tenant and model (every tenant for an admin, its own for
another key) and follows new requests live.

One live server for the module: scripted models m and secret, an --api-key key (the test's own, for
reading the server's counters) and a keys file with alice (m only), bob (m and secret) and ops (admin)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fakes import ScriptedEngine
from model_configs import config
from playwright.sync_api import Browser, Page
from servers import live_server
from ui_browser import CONTRAST, PHONE, api_status, card, wait_state, watched_page

from llmserve.config.keys import load_keys
from llmserve.server import create_app
from llmserve.server.options import ServerOptions

KEY = "sk-ui-test"  # --api-key: all-powerful, tenant "--api-key"
ROOT = {"Authorization": f"Bearer {KEY}"}
KEYS = {
    "alice": {"key": "sk-alice", "models": ["m"]},
    "bob": {"key": "sk-bob", "models": ["m", "secret"]},
    "ops": {"key": "sk-ops", "admin": True},
}
Cells = dict[tuple[str, str, str, str], int]  # (tenant, model or "", window, count) -> value


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = tmp_path_factory.mktemp("keys") / "keys.json"
    path.write_text(json.dumps(KEYS))
    models = [config(float("inf"), "m"), config(float("inf"), "secret")]
    options = ServerOptions(api_keys=(KEY,), keys=load_keys(path))
    factory = lambda c: ScriptedEngine(["a", "b", "c"])  # noqa: E731
    app = create_app(models, "m", factory=factory, preload="none", options=options)
    with live_server(app) as url:
        yield url


def sign_in(page: Page, url: str, key: str) -> None:
    page.goto(f"{url}/ui/")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Open the dashboard").click()
    page.wait_for_selector("article[data-model-id]")


def chat(url: str, key: str, model: str, tokens: int) -> None:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": tokens}
    response = httpx.post(f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text


def test_with_an_api_key_it_shows_nothing_until_the_key_is_entered(browser: Browser, keyed: str) -> None:
    url = keyed
    assert httpx.post(f"{url}/v1/models/unload", json={"model_id": "m"}, headers=ROOT).status_code == 200
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


def test_a_key_without_admin_rights_sees_its_models_and_the_refusal(browser: Browser, keyed: str) -> None:
    with watched_page(browser, keyed) as watched:
        page = watched.page
        watched.expected.append("the server responded with a status of 403")  # the refusal itself
        sign_in(page, keyed, "sk-alice")
        assert page.locator("article[data-model-id]").count() == 1  # m only: secret is not hers
        assert page.locator("#admin-note").is_visible()
        page.wait_for_selector('#models-summary:has-text("this key\'s tenant: alice")')
        before = api_status(keyed, "m", ROOT)
        action = "unload" if before == "loaded" else "load"
        card(page, "m").locator(f'[data-action="{action}"]').click()
        alert = card(page, "m").get_by_role("alert")
        alert.wait_for()
        text = alert.inner_text()
        assert text.startswith(f"{action.capitalize()} refused: this API key has no admin rights.")
        assert "the key of 'alice' has none" in text  # the server's own reason
        assert alert.get_attribute("data-code") == "admin_required"
        assert api_status(keyed, "m", ROOT) == before  # nothing happened on the server
        # her stream carries only her models: secret's load (first) never shows, m's change (then) does
        for model in ("secret", "m"):
            path = "/v1/models/unload" if api_status(keyed, model, ROOT) == "loaded" else "/v1/models/reload"
            assert httpx.post(f"{keyed}{path}", json={"model_id": model}, headers=ROOT).status_code == 200
        page.wait_for_selector('#event-log li[data-model="m"]')
        assert page.locator('#event-log li[data-model="secret"]').count() == 0
        assert "secret" not in page.content()  # nor in the memory bars: its share is "other models"
        watched.assert_clean()


USAGE_CELLS = """() => Object.fromEntries([...document.querySelectorAll("#usage-table td[data-count]")].map((td) => {
  const tr = td.closest("tr");
  return [[tr.dataset.tenant, tr.dataset.model, td.dataset.window, td.dataset.count].join("|"), Number(td.textContent)];
}))"""


def page_cells(page: Page) -> Cells:
    found: dict[str, int] = page.evaluate(USAGE_CELLS)
    return {(t, m, w, c): v for key, v in found.items() for t, m, w, c in [key.split("|")]}


def server_cells(url: str, tenants: tuple[str, ...]) -> Cells:
    """The server's counters of `tenants` (read with the --api-key key, which counts for none of them)."""
    report = httpx.get(f"{url}/admin/usage", headers=ROOT).json()["tenants"]
    out: Cells = {}
    for name in tenants:
        rows: dict[str, Any] = {"": report[name], **report[name]["models"]}
        for model, spans in rows.items():
            for window in ("last_minute", "last_hour", "since_start"):
                for count in ("requests", "total_tokens"):
                    out[(name, model, window, count)] = spans[window][count]
    return out


def same_counters(page: Page, url: str, tenants: tuple[str, ...]) -> Cells:
    """Waits until the page shows the server's counters of `tenants` (a refresh may be under way)."""
    deadline = time.monotonic() + 15
    while True:
        shown = {k: v for k, v in page_cells(page).items() if k[0] in tenants}
        expected = server_cells(url, tenants)
        if shown == expected:
            return shown
        assert time.monotonic() < deadline, f"the page shows {shown}, the server counts {expected}"
        time.sleep(0.2)


def test_the_usage_panel_shows_the_servers_counters_per_tenant(browser: Browser, keyed: str) -> None:
    chat(keyed, "sk-alice", "m", 3)
    chat(keyed, "sk-bob", "m", 2)
    chat(keyed, "sk-bob", "secret", 3)
    with watched_page(browser, keyed) as watched:  # an admin sees every tenant
        page = watched.page
        sign_in(page, keyed, "sk-ops")
        page.wait_for_selector("#usage-table td[data-count]")
        assert page.locator("#usage-link").is_visible()
        assert page.locator("#admin-note").is_hidden()
        shown = same_counters(page, keyed, ("alice", "bob", "ops"))
        assert shown[("bob", "secret", "since_start", "requests")] == 1
        assert shown[("alice", "m", "since_start", "total_tokens")] > 3
        chat(keyed, "sk-alice", "m", 3)  # live: the panel follows without a reload
        after = same_counters(page, keyed, ("alice", "bob", "ops"))
        assert after[("alice", "m", "since_start", "requests")] == 2
        assert page.evaluate("document.querySelectorAll('#usage-table tbody').length") >= 3
        assert page.evaluate(CONTRAST) == []
        page.set_viewport_size(PHONE)  # type: ignore[arg-type]
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]  # the table scrolls
        watched.assert_clean()
    with watched_page(browser, keyed) as watched:  # alice sees her own usage only
        page = watched.page
        sign_in(page, keyed, "sk-alice")
        page.wait_for_selector("#usage-table td[data-count]")
        same_counters(page, keyed, ("alice",))
        assert {tenant for tenant, _, _, _ in page_cells(page)} == {"alice"}
        assert "Requests and tokens of this key's tenant" in page.locator("#usage-status").inner_text()
        watched.assert_clean()
