"""A stranger becomes a paying caller without an administrator, in Debian's Chromium, on both backends.

From the public price list to a working key with credit: sign up, open the mailed link (a real SMTP
server on loopback), sign in, turn on two-factor sign-in and sign in again with a code, top up
through the Epay gateway (a wire-accurate fake), see the money credited once, make a key, and call
the gateway with the official openai SDK, which the balance pays for.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import openai
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests.conftest import Gateway, wait_until
from tests.fakes import epay as epay_fake
from tests.fakes import openai_upstream
from tests.fakes.mailbox import Mailbox, smtp_server
from tests.fakes.server import FakeServer
from tests.test_console_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS
from tests.test_two_factor import Authenticator

ADMIN_KEY = "admin-key-journey-0123456789"
UPSTREAM_KEY = "sk-upstream-journey-0123456789"
PUBLIC_URL = "https://relay.example.test"
PASSWORD = "a-long-walk-home"

expect.set_options(timeout=15_000)


@dataclass
class Site:
    gateway: Gateway
    mailbox: Mailbox
    admin: httpx.Client


@pytest.fixture(scope="module")
def site(gateway_factory: Callable[..., Gateway]) -> Iterator[Site]:
    mailbox = Mailbox()
    smtp = smtp_server(mailbox)
    epay_server = FakeServer(epay_fake.create_app()).start()
    upstream = FakeServer(openai_upstream.create_app({UPSTREAM_KEY})).start()
    gateway = gateway_factory({
        "admin_key": ADMIN_KEY,
        "smtp": {"host": "127.0.0.1", "port": smtp.port, "starttls": False, "from": "relay@example.test"},
        # Mailed links name the public address; Epay notifies and returns to the address each order came from.
        "signup": {"mode": "open", "public_url": PUBLIC_URL},
        "payments": {"enabled": True, "currency_rate": {"cny": 0.14}, "min_usd": 1, "max_usd": 1000,
                     "epay": {"url": epay_server.url, "pid": epay_fake.PID, "key": epay_fake.KEY}},
        "channels": [{"name": "openai", "base_url": upstream.url, "keys": [UPSTREAM_KEY], "models": ["gpt-4o-mini"]}],
        "prices": {"gpt-4o-mini": {"per_request": 0.01}},
    })
    admin = httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)
    yield Site(gateway, mailbox, admin)
    admin.close()
    upstream.stop()
    epay_server.stop()
    smtp.stop()


@pytest.fixture(scope="module")
def page(site: Site) -> Iterator[Page]:
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing (scripts/browser.sh: apt-get install chromium)."
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(base_url=site.gateway.url, locale="en-US", viewport={"width": 1280, "height": 900})
        opened = context.new_page()
        problems: list[str] = []
        opened.on("pageerror", lambda error: problems.append(f"script error: {error}"))
        yield opened
        browser.close()
        assert not problems, problems


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"journey-{name}.png"), full_page=True)


def sign_in(page: Page) -> None:
    page.get_by_label("User name").fill("ada")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def test_from_the_price_list_to_a_paid_call_without_an_administrator(site: Site, page: Page) -> None:
    page.goto("/#/pricing")
    expect(page.get_by_text("gpt-4o-mini").first).to_be_visible()
    shot(page, "prices")

    page.goto("/")
    page.get_by_role("link", name="Create an account").click()
    expect(page.get_by_role("heading", level=1, name="Create an account")).to_be_visible()
    page.get_by_label("User name").fill("ada")
    page.get_by_label("E-mail address").fill("ada@example.org")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page.locator(".login-card [role=status]")).to_contain_text("we mailed a link to ada@example.org")
    mail = wait_until(lambda: site.mailbox.to("ada@example.org"), what="the verification mail")[0]
    link = re.search(re.escape(PUBLIC_URL) + r"(/#/verify\?token=[\w-]+)", mail.get_content())
    assert link is not None, mail.get_content()
    page.goto(link.group(1))
    expect(page.get_by_text("Your e-mail address is confirmed.")).to_be_visible()
    page.get_by_role("link", name="Back to sign-in").click()
    expect(page.get_by_role("heading", level=1, name="Sign in")).to_be_visible()
    sign_in(page)
    expect(page.locator(".topbar .name")).to_have_text("ada")

    # Two-factor sign-in on, then a sign-in that needs the code.
    page.goto("/#/account")
    card = page.locator("section.twofa")
    card.get_by_role("button", name="Set up an authenticator app").click()
    phone = Authenticator(card.get_by_label("Key").input_value())
    card.get_by_label("Six-digit code").fill(phone.code())
    card.get_by_role("button", name="Turn on").click()
    expect(card.get_by_text("Authenticator app on")).to_be_visible()
    page.locator("nav .sign-out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    sign_in(page)
    expect(page.get_by_role("heading", name="Two-factor sign-in")).to_be_visible()
    page.get_by_label("Six-digit code").fill(phone.code())
    page.get_by_role("button", name="Verify").click()
    expect(page.locator(".topbar .name")).to_have_text("ada")

    # Pay 100 CNY through Epay: $14.00 of credit, once, however often the browser comes back.
    page.goto("/#/topup")
    page.get_by_label("Pay with").select_option(label="Alipay (CNY)")
    page.get_by_label("Amount (CNY)").fill("100")
    page.get_by_role("button", name="Go to payment").click()
    page.get_by_role("button", name="确认支付").click()
    expect(page.get_by_text("Payment received: $14.00 was added to your balance.")).to_be_visible()
    page.reload()
    expect(page.locator("header .balance")).to_have_text("$14.00")
    shot(page, "paid")
    ada = next(u for u in site.admin.get("/api/users").json()["data"] if u["name"] == "ada")
    assert [e["kind"] for e in site.admin.get(f"/api/users/{ada['id']}/ledger").json()["data"]] == ["topup"]

    # A key, and a call that the balance pays for.
    page.goto("/#/keys")
    page.get_by_role("button", name="Create a key").click()
    page.get_by_role("dialog").get_by_label("Name").fill("first")
    page.get_by_role("dialog").get_by_role("button", name="Create").click()
    key = page.get_by_role("dialog", name="Your new key").get_by_label('Key "first"').input_value()
    shot(page, "key")
    client = openai.OpenAI(base_url=site.gateway.v1, api_key=key, max_retries=0)
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])
    assert reply.choices[0].message.content
    wait_until(lambda: site.admin.get(f"/api/users/{ada['id']}").json()["balance_micros"] == 14_000_000 - 10_000,
               what="the call charged to the balance")
