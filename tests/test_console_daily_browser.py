"""The console's daily-work pages in Chromium: public prices and "how to call" without signing in, keys with
the base URL and examples, the admin's page of every key, and the phone layout (390 px) of tables and top bar.

Reuses the console browser module's gateway, browser and page fixtures (one gateway for this module).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
from playwright.sync_api import Page, expect

from tests.fakes import openai_upstream
from tests.test_console_browser import (  # noqa: F401  (fixtures, found by name)
    UPSTREAM_KEY, Site, browser, go, open_page, sessions, shot, site,
)

PHONE = {"width": 390, "height": 844}


def test_a_visitor_reads_prices_and_how_to_call_from_the_sign_in_page(open_page: Callable[..., Page],
                                                                      site: Site) -> None:
    page = open_page()
    page.goto("/")
    expect(page.get_by_role("heading", level=1, name="Sign in")).to_be_visible()
    page.get_by_role("navigation", name="Public pages").get_by_role("link", name="Price list").click()
    expect(page.get_by_role("heading", level=1, name="Price list")).to_be_visible()
    row = page.get_by_role("row").filter(has_text="gpt-4o-mini")
    expect(row).to_contain_text("$2.50")
    expect(row).to_contain_text("$10.00")
    expect(page.get_by_role("row").filter(has_text="mj_imagine")).to_contain_text("$0.10")
    shot(page, "public-prices")

    page.get_by_role("navigation", name="Public pages").get_by_role("link", name="How to call").click()
    expect(page.get_by_role("heading", level=1, name="How to call")).to_be_visible()
    expect(page.get_by_label("Base URL")).to_have_value(site.url)
    tabs = page.get_by_role("tablist", name="Examples")
    expect(tabs.get_by_role("tab", name="OpenAI (Python)")).to_have_attribute("aria-selected", "true")
    openai_code = page.get_by_role("tabpanel").get_by_label("OpenAI (Python)")
    assert f'base_url="{site.url}/v1"' in openai_code.input_value()
    tabs.get_by_role("tab", name="OpenAI (Python)").press("ArrowRight")
    expect(tabs.get_by_role("tab", name="Anthropic (Python)")).to_be_focused()
    expect(page.get_by_role("tabpanel").get_by_label("Anthropic (Python)")).to_be_visible()
    tabs.get_by_role("tab", name="curl").click()
    assert f"curl {site.url}/v1/chat/completions" in page.get_by_role("tabpanel").get_by_label("curl").input_value()
    shot(page, "public-how-to-call")
    page.get_by_role("link", name="Sign in").click()
    expect(page.get_by_role("heading", level=1, name="Sign in")).to_be_visible()


def test_keys_on_a_phone_show_the_base_url_an_example_and_stay_usable(open_page: Callable[..., Page],
                                                                      site: Site) -> None:
    page = open_page("bob", viewport=PHONE)
    go(page, "keys", "API keys")
    expect(page.locator("code.base-url")).to_have_text(site.url)
    page.get_by_role("button", name="Create a key").click()
    dialog = page.get_by_role("dialog", name="Create a key")
    dialog.get_by_label("Name").fill("phone")
    dialog.get_by_role("button", name="Create").click()
    once = page.get_by_role("dialog", name="Your new key")
    key = once.get_by_label('Key "phone"').input_value()
    curl = once.get_by_role("tab", name="curl")
    curl.click()
    assert f"Authorization: Bearer {key}" in once.get_by_role("tabpanel").get_by_label("curl").input_value()
    shot(page, "daily-new-key-phone")
    once.get_by_role("button", name="Done").click()

    # Each row is a card: its status and its actions are on screen without scrolling sideways.
    row = page.get_by_role("row").filter(has_text="phone")
    for part in (row.get_by_text("Enabled"), row.get_by_role("button", name="Edit phone"),
                 row.get_by_role("button", name="Delete phone")):
        box = part.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], box
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    balance = page.locator(".topbar .balance")
    assert balance.evaluate("(e) => e.scrollWidth <= e.clientWidth") and balance.bounding_box()["x"] + \
        balance.bounding_box()["width"] <= PHONE["width"]
    shot(page, "daily-keys-phone")

    # Editing a key changes it in place (PATCH).
    row.get_by_role("button", name="Edit phone").click()
    edit = page.get_by_role("dialog", name='Edit the key "phone"')
    edit.get_by_label("Name").fill("phone-2")
    edit.get_by_label("Spending limit (USD)").fill("1.25")
    edit.get_by_role("button", name="Save").click()
    edited = page.get_by_role("row").filter(has_text="phone-2")
    expect(edited).to_contain_text("$1.25")


def test_an_admin_finds_anyones_key(open_page: Callable[..., Page], site: Site) -> None:
    for user, name in (("alice", "alice-laptop"), ("bob", "bob-server")):
        site.admin.post("/api/tokens", json={"name": name, "user_id": site.users[user]["id"]})
    page = open_page("root")
    go(page, "admin/keys", "All keys")
    page.get_by_label("Search by key or user name").fill("bob")
    expect(page.get_by_role("row").filter(has_text="bob-server")).to_contain_text("bob")
    expect(page.get_by_role("row").filter(has_text="alice-laptop")).to_have_count(0)
    shot(page, "daily-admin-keys")


def test_the_playground_needs_no_pasted_key_and_shows_the_cost(open_page: Callable[..., Page]) -> None:
    page = open_page("alice")
    go(page, "playground", "Playground")
    page.get_by_label("Model").fill("gpt-4o-mini")
    page.get_by_label("System prompt").fill("Answer briefly.")
    page.get_by_label("Temperature").fill("0.2")
    page.get_by_label("Max tokens").fill("64")
    page.get_by_label("Message").fill("Hello")
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_role("status").filter(has_text="cost")).to_contain_text(re.compile(r"cost \$0\.\d+"))
    shot(page, "daily-playground")
    go(page, "keys", "API keys")
    expect(page.get_by_role("row").filter(has_text="console playground")).to_contain_text("Enabled")


def test_an_admin_searches_tests_and_batches_channels(open_page: Callable[..., Page], site: Site) -> None:
    for name in ("batch-a", "batch-b"):
        created = site.admin.post("/api/channels", json={"name": name, "base_url": site.openai.url + "/v1",
                                                         "keys": [UPSTREAM_KEY], "models": []})
        assert created.status_code == 201 and created.json()["base_url"] == site.openai.url  # /v1 dropped
    page = open_page("root")
    go(page, "admin/channels", "Channels")
    page.get_by_label("Search channels").fill("batch-")
    expect(page.get_by_role("row", name=re.compile("seeded"))).to_have_count(0)
    batch_a = page.get_by_role("row", name=re.compile("batch-a"))
    expect(batch_a).to_contain_text("All models")
    page.get_by_label("Select batch-a").check()
    page.get_by_label("Select batch-b").check()
    page.get_by_role("button", name="Disable selected").click()
    expect(page.get_by_role("row", name=re.compile("batch-b"))).to_contain_text("Disabled")
    expect(batch_a).to_contain_text("Disabled")

    # The seeded channel: test it with a model picked in its row, then fetch its upstream's models.
    page.get_by_label("Search channels").fill("seeded")
    seeded = page.get_by_role("row", name=re.compile("seeded"))
    seeded.get_by_label("Model to test seeded with").select_option("slow-stream")
    seeded.get_by_role("button", name="Test seeded").click()
    expect(seeded.locator(".test-cell")).to_contain_text(re.compile(r"ok\s*\d+ ms"))
    seeded.get_by_role("button", name="Edit seeded").click()
    dialog = page.get_by_role("dialog", name='Edit channel "seeded"')
    dialog.get_by_role("button", name="Fetch models from upstream").click()
    expect(dialog.get_by_label("Models", exact=True)).to_have_value(", ".join(sorted(openai_upstream.LISTED_MODELS)))
    shot(page, "daily-channel-fetch-models")
    dialog.get_by_role("button", name="Cancel").click()

    page.get_by_label("Search channels").fill("batch-")
    page.get_by_label("Select batch-a").check()
    page.get_by_label("Select batch-b").check()
    page.get_by_role("button", name="Delete selected").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(page.get_by_role("row", name=re.compile("batch-"))).to_have_count(0)
    assert [c["name"] for c in site.admin.get("/api/channels").json()["data"] if c["name"].startswith("batch-")] == []


def test_billing_history_log_totals_and_readable_details(open_page: Callable[..., Page], site: Site) -> None:
    key = site.admin.post("/api/tokens", json={"name": "alice-billing", "user_id": site.users["alice"]["id"]}).json()
    for _ in range(2):
        reply = httpx.post(site.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key['key']}"},
                           json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]})
        assert reply.status_code == 200
    page = open_page("alice")
    go(page, "billing", "Billing history")
    expect(page.get_by_role("row").filter(has_text="Charge").first).to_contain_text("-$0.0")
    page.get_by_label("Kind").select_option("topup")
    expect(page.get_by_role("row").filter(has_text="Charge")).to_have_count(0)
    shot(page, "daily-billing")

    go(page, "logs", "Usage logs")
    page.get_by_label("Model").fill("gpt-4o-mini")
    page.get_by_role("button", name="Apply filters").click()
    totals = page.get_by_role("region", name="Totals of the filtered logs")
    expect(totals).to_contain_text(re.compile(r"Requests\s*[2-9]"))
    page.get_by_role("button", name="Show all fields").first.click()
    details = page.locator("tr.details")
    expect(details).to_contain_text("Input tokens")
    expect(details).to_contain_text("Latency")
    assert "prompt_tokens" not in details.inner_text()
    shot(page, "daily-log-details")


def test_the_admin_dashboard_opens_on_everyone(open_page: Callable[..., Page]) -> None:
    page = open_page("root")
    go(page, "dashboard", "Dashboard")
    expect(page.get_by_label("Show", exact=True)).to_have_value("all")
    expect(page.get_by_role("region", name="Totals")).to_contain_text("Users' balances")
