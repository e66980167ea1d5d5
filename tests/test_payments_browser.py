"""Top-up by payment in a real browser (Debian's Chromium via Playwright), on SQLite: a user tops up
through the fake Epay gateway — console form, the gateway's cashier page, its notify and return —
and sees the balance once; an administrator sees the order. The API underneath runs on both
backends in tests/test_payments.py. Pages are saved under test-artifacts/console/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.conftest import Gateway, start_gateway
from tests.fakes import epay as epay_fake
from tests.fakes.server import FakeServer
from tests.test_console_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS

ADMIN_KEY = "admin-key-payments-browser-0123456789"
PASSWORDS = {"payer": "payer-password", "boss": "boss-password"}

expect.set_options(timeout=10_000)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, httpx.Client, FakeServer]]:
    epay_server = FakeServer(epay_fake.create_app()).start()
    workdir: Path = tmp_path_factory.mktemp("payments-browser")
    gateway = start_gateway({
        "database_url": f"sqlite:///{workdir / 'polyrelay.db'}",
        "admin_key": ADMIN_KEY,
        "payments": {"enabled": True, "currency_rate": {"cny": 0.14}, "min_usd": 1, "max_usd": 1000,
                     "bonus_tiers": [{"from": 10, "bonus_percent": 5}],
                     "epay": {"url": epay_server.url, "pid": epay_fake.PID, "key": epay_fake.KEY}},
    }, workdir)
    admin = httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)
    for name, role in (("payer", "user"), ("boss", "admin")):
        assert admin.post("/api/users", json={"name": name, "password": PASSWORDS[name], "role": role}).is_success
    yield gateway, admin, epay_server
    admin.close()
    gateway.stop()
    epay_server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def signed_in(browser: Browser, gateway: Gateway, user: str, problems: list[str], locale: str = "en-US") -> Page:
    """A page signed in as ``user``; script errors and Content-Security-Policy violations go to ``problems``."""
    context = browser.new_context(base_url=gateway.url, locale=locale, viewport={"width": 1280, "height": 860})
    assert context.request.post("/api/auth/login", data={"name": user, "password": PASSWORDS[user]}).ok
    page = context.new_page()
    page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    page.on("console", lambda message: problems.append(f"console: {message.text}")
            if message.type == "error" and "Content Security Policy" in message.text else None)
    return page


def in_review(gateway: Gateway, epay_server: FakeServer) -> None:
    """An order of 20 CNY that the Epay gateway reports paid with 25 CNY: not credited, kept for review."""
    payer = httpx.Client(base_url=gateway.url, headers={"X-Requested-With": "test"}, timeout=30)
    assert payer.post("/api/auth/login", json={"name": "payer", "password": PASSWORDS["payer"]}).is_success
    form = payer.post("/api/me/orders", json={"provider": "epay", "method": "wxpay", "amount": 20}).json()[
        "checkout"]["form"]
    assert httpx.post(form["action"], data=form["fields"]).is_success
    trade = next(t for t in epay_server.knobs["trades"].values() if t["out_trade_no"] == form["fields"]["out_trade_no"])
    epay_server.knobs["paid_money"] = "25.00"
    httpx.post(f"{epay_server.url}/pay/{trade['trade_no']}")
    payer.close()


def test_a_user_tops_up_through_epay_and_sees_the_balance_once(
        browser: Browser, site: tuple[Gateway, httpx.Client, FakeServer]) -> None:
    gateway, admin, epay_server = site
    problems: list[str] = []
    page = signed_in(browser, gateway, "payer", problems)
    page.goto("/#/topup")
    expect(page.get_by_role("heading", level=1, name="Top up")).to_be_visible()
    page.get_by_label("Pay with").select_option(label="Alipay (CNY)")
    page.get_by_label("Amount (CNY)").fill("100")
    expect(page.get_by_text("You get $14.70, including a $0.70 bonus.")).to_be_visible()  # 100 x 0.14, +5 %
    page.screenshot(path=str(ARTIFACTS / "topup.png"), full_page=True)
    page.get_by_role("button", name="Go to payment").click()

    expect(page.get_by_role("button", name="确认支付")).to_be_visible()  # the Epay gateway's cashier
    assert not page.url.startswith(gateway.url)
    page.get_by_role("button", name="确认支付").click()  # it notifies the gateway, then sends the browser back

    expect(page.get_by_text("Payment received: $14.70 was added to your balance.")).to_be_visible()
    assert "/#/topup?order=PR" in page.url
    expect(page.locator("header .balance")).to_have_text("$14.70")
    expect(page.get_by_role("region", name="Your orders").get_by_text("paid", exact=True)).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "topup-paid.png"), full_page=True)
    page.reload()  # coming back again credits nothing more
    expect(page.get_by_text("Payment received: $14.70 was added to your balance.")).to_be_visible()
    payer = next(u for u in admin.get("/api/users").json()["data"] if u["name"] == "payer")
    assert payer["balance_micros"] == 14_700_000
    assert [e["kind"] for e in admin.get(f"/api/users/{payer['id']}/ledger").json()["data"]] == ["topup"]
    page.context.close()

    in_review(gateway, epay_server)
    boss = signed_in(browser, gateway, "boss", problems, locale="zh-CN")
    boss.goto("/#/admin/orders")
    expect(boss.get_by_role("heading", level=1, name="充值订单")).to_be_visible()
    orders = boss.get_by_role("region", name="充值订单")
    expect(orders.get_by_text("已支付")).to_have_count(1)
    expect(orders.get_by_text("待人工处理")).to_be_visible()
    orders.get_by_role("button", name="显示全部字段").first.click()  # newest first: the order in review says why
    expect(orders.get_by_text("paid 25.00 CNY for an order of 20.00 CNY")).to_be_visible()
    boss.screenshot(path=str(ARTIFACTS / "admin-orders-zh.png"), full_page=True)
    orders.get_by_role("button", name="入账").click()  # checked at the provider: credit the order as made
    dialog = boss.get_by_role("dialog")
    expect(dialog).to_contain_text("为 payer 入账 $2.80")
    dialog.get_by_role("button", name="入账").click()
    expect(orders.get_by_text("已支付")).to_have_count(2)
    expect(orders.get_by_role("button", name="入账")).to_have_count(0)
    assert next(u for u in admin.get("/api/users").json()["data"] if u["name"] == "payer")["balance_micros"] == \
        14_700_000 + 2_800_000
    boss.context.close()
    assert not problems, problems
