"""Sign-up in a real browser (Debian's Chromium through Playwright; SQLite, the API is tested on both
backends in tests/test_signup.py): a visitor signs up, opens the link mailed to a real SMTP server on
loopback, signs in, and finds their invite link on the account page."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests.conftest import Gateway, start_gateway, wait_until
from tests.fakes.mailbox import Mailbox, smtp_server
from tests.test_console_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS

PUBLIC_URL = "https://console.example.test"

expect.set_options(timeout=10_000)


@dataclass
class Site:
    gateway: Gateway
    mailbox: Mailbox


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    mailbox = Mailbox()
    smtp = smtp_server(mailbox)
    workdir: Path = tmp_path_factory.mktemp("signup-browser")
    gateway = start_gateway({
        "database_url": f"sqlite:///{workdir / 'polyrelay.db'}",
        "smtp": {"host": "127.0.0.1", "port": smtp.port, "starttls": False, "from": "relay@example.test"},
        "signup": {"mode": "open", "public_url": PUBLIC_URL, "starting_balance_usd": 1},
        "invitations": {"reward_fixed_usd": 0.5},
    }, workdir)
    yield Site(gateway, mailbox)
    gateway.stop()
    smtp.stop()


@pytest.fixture(scope="module")
def page(site: Site) -> Iterator[Page]:
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing (scripts/browser.sh: apt-get install chromium)."
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(base_url=site.gateway.url, locale="en-US")
        opened = context.new_page()
        problems: list[str] = []
        opened.on("pageerror", lambda error: problems.append(f"script error: {error}"))
        yield opened
        browser.close()
        assert not problems, problems


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"signup-{name}.png"), full_page=True)


def test_a_visitor_signs_up_confirms_the_mailed_link_and_signs_in(site: Site, page: Page) -> None:
    page.goto("/")
    expect(page.get_by_role("link", name="Forgot your password?")).to_be_visible()
    shot(page, "sign-in")
    page.get_by_role("link", name="Create an account").click()
    expect(page.get_by_role("heading", level=1, name="Create an account")).to_be_visible()
    page.get_by_label("User name").fill("newton")
    page.get_by_label("E-mail address").fill("newton@example.test")
    page.get_by_label("Password", exact=True).fill("apples-fall-down")
    page.get_by_label("Password again").fill("apples-fall-down")
    shot(page, "form")
    page.get_by_role("button", name="Create account").click()
    expect(page.locator(".login-card [role=status]")).to_contain_text("we mailed a link to newton@example.test")

    mail = wait_until(lambda: site.mailbox.to("newton@example.test"), what="the verification mail")[0]
    link = re.search(re.escape(PUBLIC_URL) + r"(/#/verify\?token=[\w-]+)", mail.get_content())
    assert link is not None, mail.get_content()
    page.goto(link.group(1))  # the link, on the gateway this test reaches
    expect(page.get_by_text("Your e-mail address is confirmed.")).to_be_visible()

    page.get_by_role("link", name="Back to sign-in").click()
    page.get_by_label("User name").fill("newton")
    page.get_by_label("Password").fill("apples-fall-down")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".topbar .name")).to_have_text("newton")
    expect(page.locator(".topbar .balance")).to_contain_text("1.00")

    page.goto("/#/account")
    expect(page.get_by_role("heading", level=2, name="Invitations")).to_be_visible()
    expect(page.get_by_label("Your invite link")).to_have_value(re.compile(re.escape(PUBLIC_URL) + r"/#/signup\?invite="))
    expect(page.get_by_role("button", name="Move to balance")).to_be_disabled()
    shot(page, "account")
