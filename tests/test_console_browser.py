"""The web console in a real browser: Debian's Chromium, driven by Playwright, against a real gateway.

One gateway (SQLite; the API underneath is tested on both backends elsewhere) with a fake
OpenAI upstream and a fake midjourney-proxy. Users sign in, create keys, chat in the
playground, read logs and the dashboard, redeem codes and use the task gallery; an admin
manages channels, users, prices and codes. Every page is saved as a full-page PNG under
test-artifacts/console/.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from tests.conftest import Gateway, start_gateway, wait_until
from tests.fakes import midjourney_proxy, openai_upstream
from tests.fakes.server import FakeServer

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "console"
ADMIN_KEY = "admin-key-console-0123456789"
UPSTREAM_KEY = "sk-upstream-console-0123456789"
FIRST_LOAD_BUDGET = 300_000  # bytes transferred on the first navigation
PASSWORDS = {"alice": "alice-password", "bob": "bob-password", "root": "root-password"}
REPLY = "".join(openai_upstream.CHAT_REPLY)

expect.set_options(timeout=10_000)


@dataclass
class Site:
    gateway: Gateway
    openai: FakeServer
    mj: FakeServer
    admin: httpx.Client
    users: dict[str, dict[str, Any]]

    @property
    def url(self) -> str:
        return self.gateway.url


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    openai_fake = FakeServer(openai_upstream.create_app({UPSTREAM_KEY})).start()
    openai_fake.knobs["stream_cancelled"] = threading.Event()
    mj_fake = FakeServer(midjourney_proxy.create_app()).start()
    workdir = tmp_path_factory.mktemp("console")
    gateway = start_gateway({
        "database_url": f"sqlite:///{workdir / 'polyrelay.db'}",
        "admin_key": ADMIN_KEY,
        "allow_private_image_hosts": True,  # "Fetch models from upstream" reaches the fake on loopback
        "tasks": {"poll_interval_s": 0.1, "lease_s": 5},
        "channels": [
            {"name": "seeded", "base_url": openai_fake.url, "keys": [UPSTREAM_KEY],
             "models": ["gpt-4o-mini", "slow-stream"]},
            {"name": "mj", "type": "midjourney", "base_url": mj_fake.url, "keys": [midjourney_proxy.SECRET],
             "models": ["mj_*"]},
        ],
        "prices": {"gpt-4o-mini": {"input_per_mtok": 2.5, "output_per_mtok": 10}, "slow-stream": {"per_request": 0.001},
                   "mj_imagine": {"per_request": 0.1}, "mj_*": {"per_request": 0.05}},
    }, workdir)
    admin = httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)
    users = {}
    for name, role, balance in (("alice", "user", 5_000_000), ("bob", "user", 1_000_000), ("root", "admin", 0)):
        created = admin.post("/api/users", json={"name": name, "password": PASSWORDS[name], "role": role,
                                                 "balance_micros": balance})
        assert created.status_code == 201, created.text
        users[name] = created.json()
    yield Site(gateway, openai_fake, mj_fake, admin, users)
    admin.close()
    gateway.stop()
    mj_fake.stop()
    openai_fake.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM.exists(), (
        f"{CHROMIUM} is missing: the console tests drive Debian's Chromium. `make test` installs it "
        "(scripts/browser.sh: apt-get install chromium)."
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def sessions(browser: Browser, site: Site) -> Callable[[str], Any]:
    """``sessions(user)``: a signed-in browser state (the session cookie), made once per user.

    Each sign-in costs an Argon2 verification, so tests share one session per user.
    """
    made: dict[str, Any] = {}

    def session(user: str) -> Any:
        if user not in made:
            context = browser.new_context(base_url=site.url)
            signed_in = context.request.post("/api/auth/login", data={"name": user, "password": PASSWORDS[user]})
            assert signed_in.ok, signed_in.text()
            made[user] = context.storage_state()
            context.close()
        return made[user]

    return session


@pytest.fixture
def open_page(browser: Browser, site: Site, sessions: Callable[[str], Any]) -> Iterator[Callable[..., Page]]:
    """``open_page(user=None, viewport=None, locale="en-US", dark=False)``: a fresh context, signed in as ``user``.

    Any uncaught script error or Content-Security-Policy violation fails the test.
    """
    contexts: list[BrowserContext] = []
    problems: list[str] = []

    def open_(user: str | None = None, viewport: dict[str, int] | None = None, locale: str = "en-US",
              dark: bool = False) -> Page:
        context = browser.new_context(base_url=site.url, viewport=viewport or {"width": 1280, "height": 860},
                                      locale=locale, color_scheme="dark" if dark else "light",
                                      storage_state=sessions(user) if user is not None else None)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
        page.on("console", lambda message: problems.append(f"console: {message.text}")
                if message.type == "error" and "Content Security Policy" in message.text else None)
        return page

    yield open_
    for context in contexts:
        context.close()
    assert not problems, problems


def shot(page: Page, name: str) -> None:
    """Save a full-page PNG of what is shown, after checking that every form control on it has a label."""
    unlabelled = page.evaluate("""() => [...document.querySelectorAll('input, select, textarea')]
        .filter((control) => !control.labels.length && !control.getAttribute('aria-label'))
        .map((control) => control.outerHTML)""")
    assert not unlabelled, unlabelled
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def go(page: Page, route: str, heading: str) -> None:
    page.goto(f"/#/{route}")
    expect(page.get_by_role("heading", level=1, name=heading)).to_be_visible()


def nav(page: Page, label: str) -> None:
    page.get_by_role("navigation", name="Main").get_by_role("link", name=label, exact=True).click()
    expect(page.get_by_role("heading", level=1, name=label)).to_be_visible()


def dollars(text: str) -> Decimal:
    return Decimal(re.sub(r"[^\d.\-]", "", text))


def first_load_bytes(page: Page, url: str, ready: Callable[[], None]) -> int:
    """Bytes of every response body on the first navigation to ``url`` (cold cache), once ``ready``."""
    sizes: list[int] = []
    page.on("requestfinished", lambda request: sizes.append(request.sizes()["responseBodySize"]))
    page.goto(url)
    ready()
    page.wait_for_load_state("networkidle")
    return sum(sizes)


def test_first_load_is_small_and_served_under_a_strict_policy(open_page: Callable[..., Page]) -> None:
    page = open_page()
    signed_out = first_load_bytes(page, "/",
                                  lambda: expect(page.get_by_role("heading", name="Sign in")).to_be_visible())
    shot(page, "login")
    document = page.request.get("/")
    assert "script-src 'self'" in document.headers["content-security-policy"]
    assert document.headers["x-content-type-options"] == "nosniff" and document.headers["etag"]
    assert page.request.get("/console/js/nope.js").status == 404

    user_page = open_page("alice")
    signed_in = first_load_bytes(user_page, "/#/dashboard",
                                 lambda: expect(user_page.locator("figure.chart").first).to_be_visible())
    print(f"\nfirst load: signed out {signed_out} bytes, signed in (dashboard) {signed_in} bytes")
    assert signed_out < FIRST_LOAD_BUDGET and signed_in < FIRST_LOAD_BUDGET, (signed_out, signed_in)


def test_sign_in_key_playground_logs_and_dashboard(open_page: Callable[..., Page], site: Site) -> None:
    page = open_page()
    page.goto("/")
    page.get_by_label("User name").fill("alice")
    page.get_by_label("Password").fill("wrong-password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("Wrong name or password")
    page.get_by_label("Password").fill(PASSWORDS["alice"])
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", level=1, name="Dashboard")).to_be_visible()

    # A key: created in a dialog that shows it once; Escape closes dialogs.
    nav(page, "API keys")
    page.get_by_role("button", name="Create a key").click()
    dialog = page.get_by_role("dialog", name="Create a key")
    expect(dialog.get_by_label("Name")).to_be_focused()
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    page.get_by_role("button", name="Create a key").click()
    dialog.get_by_label("Name").fill("laptop")
    dialog.get_by_label("Spending limit (USD)").fill("2.5")
    dialog.get_by_label("Models").fill("gpt-4o-mini, slow-stream")
    dialog.get_by_label("Allowed IP addresses").fill("127.0.0.0/8\n::1")
    dialog.get_by_role("button", name="Create").click()
    once = page.get_by_role("dialog", name="Your new key")
    key = once.get_by_label('Key "laptop"').input_value()
    assert key.startswith("sk-pr-")
    shot(page, "keys-new-key-dialog")
    once.get_by_role("button", name="Use in the playground").click()

    # The playground streams through the gateway with the key kept for this tab.
    expect(page.get_by_role("heading", level=1, name="Playground")).to_be_visible()
    page.get_by_label("Message").fill("Hi there")
    page.get_by_role("button", name="Send").click()
    transcript = page.get_by_label("Conversation")
    expect(transcript).to_contain_text(REPLY)
    expect(page.get_by_role("main").get_by_role("status")).to_contain_text("Done in")
    # Tokens show as they arrive: a never-ending stream shows text before it is stopped.
    page.get_by_label("Model", exact=True).fill("slow-stream")
    page.get_by_label("Message").fill("Count for me")
    page.get_by_role("button", name="Send").click()
    expect(transcript.locator(".bubble").last).to_contain_text("tick tick tick")
    expect(page.get_by_role("button", name="Send")).to_be_disabled()
    page.get_by_role("button", name="Stop").click()
    expect(transcript.locator(".bubble").last).to_contain_text("Stopped.")
    assert site.openai.knobs["stream_cancelled"].wait(10)
    shot(page, "playground")

    # The key list shows it; another key is disabled, then deleted after a confirmation.
    nav(page, "API keys")
    expect(page.get_by_role("row", name=re.compile("laptop"))).to_contain_text("of $2.50")
    page.get_by_role("button", name="Create a key").click()
    page.get_by_role("dialog").get_by_label("Name").fill("throwaway")
    page.get_by_role("dialog").get_by_role("button", name="Create").click()
    page.get_by_role("dialog", name="Your new key").get_by_role("button", name="Done").click()
    throwaway = page.get_by_role("row", name=re.compile("throwaway"))
    throwaway.get_by_role("button", name="Disable").click()
    expect(throwaway).to_contain_text("Disabled")
    shot(page, "keys")
    throwaway.get_by_role("button", name="Delete throwaway").click()
    page.get_by_role("dialog", name="Please confirm").get_by_role("button", name="Delete").click()
    expect(throwaway).to_have_count(0)

    # Logs: both requests, once the batching writer has stored them; a row expands to all fields.
    alice = site.users["alice"]["id"]
    wait_until(lambda: site.gateway.query("SELECT COUNT(*) AS n FROM usage_logs WHERE user_id = :u", u=alice)[0].n >= 2,
               what="alice's usage rows")
    nav(page, "Usage logs")
    row = page.get_by_role("row", name=re.compile("gpt-4o-mini"))
    expect(row).to_contain_text("200")
    expect(page.get_by_role("row", name=re.compile("slow-stream"))).to_have_count(1)
    row.get_by_role("button", name="Show all fields").click()
    details = page.locator("tr.details")
    expect(details).to_contain_text("Request ID")  # labelled, not the API's field names
    expect(details).to_contain_text(f"Input tokens{openai_upstream.PROMPT_TOKENS}")
    shot(page, "logs-expanded")
    page.get_by_label("Model").fill("gpt-4o-mini")
    page.get_by_role("button", name="Apply filters").click()
    expect(page.get_by_role("row", name=re.compile("slow-stream"))).to_have_count(0)
    export = page.get_by_role("link", name="Export CSV")
    expect(export).to_have_attribute("href", re.compile(r"/api/me/logs/export\.csv\?.*model=gpt-4o-mini"))
    csv = page.request.get(export.get_attribute("href") or "")
    assert csv.ok and "gpt-4o-mini" in csv.text() and "slow-stream" not in csv.text()

    # The dashboard: the requests stacked by model, the totals.
    nav(page, "Dashboard")
    requests_chart = page.get_by_role("figure").filter(has_text="Requests per day")
    expect(requests_chart.locator(".legend")).to_contain_text("gpt-4o-mini")
    expect(requests_chart.locator(".legend")).to_contain_text("slow-stream")
    expect(requests_chart.locator("rect.bar")).to_have_count(2)
    expect(page.locator(".tile").filter(has_text="Requests")).to_contain_text("2")
    shot(page, "dashboard")


def test_admin_manages_channels_users_prices_and_the_system(open_page: Callable[..., Page], site: Site) -> None:
    page = open_page("root")
    go(page, "admin/channels", "Channels")
    page.get_by_role("button", name="Add a channel").click()
    dialog = page.get_by_role("dialog", name="Add a channel")
    dialog.get_by_label("Name").fill("console-made")
    dialog.get_by_label("Base URL").fill(site.openai.url)
    dialog.get_by_label("Upstream keys").fill(UPSTREAM_KEY)
    dialog.get_by_label("Models").fill("gpt-4o-mini, gpt-4o")
    dialog.get_by_label("Model mapping (JSON)").fill('{"gpt-4o": "gpt-4o-mini"}')
    dialog.get_by_label("Priority", exact=True).fill("5")
    dialog.get_by_label("Options (JSON)").fill("not json")
    dialog.get_by_role("button", name="Create").click()
    expect(dialog.get_by_role("alert")).to_contain_text("must be a JSON object")
    dialog.get_by_label("Options (JSON)").fill("")
    dialog.get_by_role("button", name="Create").click()
    channel = page.get_by_role("row", name=re.compile("console-made"))
    expect(channel).to_contain_text("Not tested")
    channel.get_by_role("button", name="Test console-made").click()
    expect(channel.locator(".test-cell")).to_contain_text(re.compile(r"ok\s*\d+ ms"))
    created = next(c for c in site.admin.get("/api/channels").json()["data"] if c["name"] == "console-made")
    assert created["priority"] == 5 and created["model_mapping"] == {"gpt-4o": "gpt-4o-mini"}
    assert created["test_result"] == "ok" and created["test_latency_ms"] > 0
    channel.get_by_role("button", name="Disable").click()
    expect(channel).to_contain_text("Disabled")
    shot(page, "admin-channels")
    channel.get_by_role("button", name="Edit console-made").click()
    edit = page.get_by_role("dialog", name='Edit channel "console-made"')
    expect(edit.get_by_label("Model mapping (JSON)")).to_have_value(re.compile(r'"gpt-4o":\s*"gpt-4o-mini"'))
    shot(page, "admin-channel-edit")
    edit.get_by_role("button", name="Cancel").click()

    # Users: top up bob through the ledger.
    nav(page, "Users")
    before = site.admin.get(f"/api/users/{site.users['bob']['id']}").json()["balance_micros"]
    bob = page.get_by_role("row", name=re.compile(r"\bbob\b"))
    bob.get_by_role("button", name="Top up / adjust bob").click()
    money = page.get_by_role("dialog")
    money.get_by_label("Amount (USD)").fill("1.25")
    money.get_by_label("Note").fill("console test")
    money.get_by_role("button", name="Apply").click()
    expect(bob).to_contain_text(f"${Decimal(before + 1_250_000) / 1_000_000:.2f}")
    shot(page, "admin-users")

    nav(page, "Groups")
    page.get_by_role("button", name="Add a group").click()
    page.get_by_role("dialog").get_by_label("Name").fill("vip")
    page.get_by_role("dialog").get_by_label("Price ratio").fill("0.8")
    page.get_by_role("dialog").get_by_role("button", name="Create").click()
    expect(page.get_by_role("row", name=re.compile("vip"))).to_contain_text("× 0.8")
    shot(page, "admin-groups")

    nav(page, "Prices")
    page.get_by_role("button", name="Add a price").click()
    price = page.get_by_role("dialog")
    price.get_by_label("Model").fill("console-model")
    price.get_by_label("Per request").fill("0.02")
    price.get_by_role("button", name="Create").click()
    expect(page.get_by_role("row", name=re.compile("console-model"))).to_contain_text("$0.02")
    assert site.admin.get("/api/prices/console-model").json()["per_request_micros"] == 20_000
    shot(page, "admin-prices")

    nav(page, "All logs")
    expect(page.get_by_role("row", name=re.compile(r"alice.*gpt-4o-mini.*seeded"))).to_have_count(1)
    shot(page, "admin-logs")

    nav(page, "System")
    expect(page.locator(".card").filter(has_text="Database")).to_contain_text("sqlite")
    expect(page.locator(".card").filter(has_text="Task poller")).to_contain_text("running")
    shot(page, "admin-system")

    nav(page, "Health")  # the channel disabled above, with who did it
    expect(page.get_by_role("region", name="Channel states").get_by_role("row", name=re.compile("console-made"))
           ).to_contain_text("disabled by admin:root")
    expect(page.get_by_role("region", name="Channel events")).to_contain_text("admin:root")
    expect(page.get_by_text("No alerts sent yet.")).to_be_visible()  # alerts are not configured here
    shot(page, "admin-health")


def test_a_redemption_code_credits_the_user(open_page: Callable[..., Page]) -> None:
    admin = open_page("root")
    go(admin, "admin/redemptions", "Redemption codes")
    admin.get_by_role("button", name="Create codes").click()
    admin.get_by_role("dialog").get_by_label("Amount (USD)").fill("2.50")
    admin.get_by_role("dialog").get_by_label("Label").fill("launch")
    admin.get_by_role("dialog").get_by_role("button", name="Create").click()
    code = admin.get_by_role("dialog", name="New redemption codes").get_by_label("1 codes, one per line").input_value()
    admin.get_by_role("dialog").get_by_role("button", name="Done").click()
    expect(admin.get_by_role("row", name=re.compile("launch"))).to_contain_text("Not redeemed")
    shot(admin, "admin-redemptions")

    user = open_page("bob")
    go(user, "redeem", "Redeem a code")
    balance = user.locator(".balance-now")
    before = dollars(balance.inner_text())
    user.get_by_label("Redemption code").fill(code)
    user.get_by_role("button", name="Redeem").click()
    expect(user.get_by_role("main").get_by_role("status")).to_contain_text("$2.50 was added")
    expect(balance).to_have_text(f"${before + Decimal('2.5'):.2f}")
    expect(user.locator(".topbar .balance")).to_have_text(f"${before + Decimal('2.5'):.2f}")
    user.get_by_label("Redemption code").fill(code)
    user.get_by_role("button", name="Redeem").click()
    expect(user.get_by_role("main").get_by_role("status")).to_contain_text("already redeemed")
    shot(user, "redeem")
    admin.reload()
    expect(admin.get_by_role("row", name=re.compile("launch"))).to_contain_text("Redeemed")


def test_a_midjourney_task_in_the_gallery(open_page: Callable[..., Page], site: Site) -> None:
    created = site.admin.post("/api/tokens", json={"name": "alice-mj", "user_id": site.users["alice"]["id"]})
    key = created.json()["key"]
    site.mj.knobs["hold"] = True  # the task stays unfinished until the gallery shows it so
    submitted = httpx.post(site.url + "/mj/submit/imagine", json={"prompt": "a lighthouse at dawn"},
                           headers={"Authorization": f"Bearer {key}"}, timeout=20)
    assert submitted.json()["code"] == 1, submitted.text
    task_id = submitted.json()["result"]

    page = open_page("alice")
    go(page, "tasks", "Tasks")
    card = page.locator(f'article[data-task-id="{task_id}"]')
    expect(card).to_contain_text("a lighthouse at dawn")
    expect(card.locator("progress")).to_be_visible()
    site.mj.knobs["hold"] = False
    # The gallery polls while a task is unfinished: it turns into the grid with its buttons, no reload.
    expect(card).to_contain_text("Finished", timeout=20_000)
    image = card.locator("img")
    expect(image).to_be_visible()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    buttons = card.get_by_role("group", name="Next actions")
    expect(buttons.get_by_role("button")).to_have_count(9)
    buttons.get_by_role("button", name="U1", exact=True).click()
    ask = page.get_by_role("dialog", name="Which key should the console use?")
    ask.get_by_label("API key").fill(key)
    ask.get_by_role("button", name="Continue").click()
    expect(page.locator("article.task-card").filter(has_text="UPSCALE")).to_have_count(1)
    shot(page, "tasks")


def test_a_user_cannot_reach_admin_pages_or_other_users_data(open_page: Callable[..., Page], site: Site) -> None:
    page = open_page("bob")
    go(page, "admin/channels", "Not allowed")
    expect(page.get_by_role("navigation", name="Main")).not_to_contain_text("Administration")
    shot(page, "not-allowed")
    status = "path => fetch(path).then(response => response.status)"
    assert page.evaluate(status, "/api/channels") == 403
    assert page.evaluate(status, f"/api/logs?user_id={site.users['alice']['id']}") == 403
    assert page.evaluate(status, "/api/tasks") == 403
    alice_token = site.admin.get("/api/tokens", params={"user_id": site.users["alice"]["id"]}).json()["data"][0]
    assert page.evaluate(status, f"/api/me/tokens/{alice_token['id']}") == 404
    go(page, "keys", "API keys")
    expect(page.get_by_text("You have no API keys yet")).to_be_visible()
    go(page, "logs", "Usage logs")
    expect(page.get_by_text("No requests match these filters")).to_be_visible()
    go(page, "tasks", "Tasks")
    expect(page.get_by_text("No tasks yet")).to_be_visible()


def test_password_change_and_sign_out(open_page: Callable[..., Page]) -> None:
    page = open_page("bob")
    go(page, "account", "Account")
    page.get_by_label("Current password").fill("not-my-password")
    page.get_by_label("New password", exact=True).fill("bob-new-password")
    page.get_by_label("New password again").fill("bob-new-password")
    page.get_by_role("button", name="Change password").click()
    expect(page.get_by_role("main").get_by_role("status")).to_have_text("The current password is wrong.")
    page.get_by_label("Current password").fill(PASSWORDS["bob"])
    page.get_by_role("button", name="Change password").click()
    expect(page.get_by_role("main").get_by_role("status")).to_have_text("Your password was changed.")
    shot(page, "account")
    page.get_by_role("main").get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("User name").fill("bob")
    page.get_by_label("Password").fill(PASSWORDS["bob"])
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("Wrong name or password")
    page.get_by_label("Password").fill("bob-new-password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", level=1, name="Dashboard")).to_be_visible()


def test_chinese_labels_and_keyboard_navigation(open_page: Callable[..., Page]) -> None:
    page = open_page("alice")
    go(page, "dashboard", "Dashboard")
    english, chinese = page.evaluate("""async () => [
        Object.keys((await import('/console/js/lang/en.js')).default).sort(),
        Object.keys((await import('/console/js/lang/zh-CN.js')).default).sort()]""")
    assert english == chinese
    # The language switch and the navigation are reachable with the keyboard.
    page.keyboard.press("Tab")  # the brand link
    page.keyboard.press("Tab")
    expect(page.get_by_label("Language")).to_be_focused()
    page.get_by_label("Language").select_option("zh-CN")
    expect(page.get_by_role("heading", level=1, name="仪表盘")).to_be_visible()
    expect(page.get_by_role("navigation", name="主导航")).to_contain_text("API 密钥")
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    expect(page.get_by_role("figure").filter(has_text="每日请求数")).to_be_visible()
    shot(page, "dashboard-zh")
    page.reload()  # the choice is remembered
    expect(page.get_by_role("heading", level=1, name="仪表盘")).to_be_visible()
    for _ in range(5):  # brand, language, account, dashboard, keys
        page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="API 密钥")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("button", name="创建密钥")).to_be_visible()
    shot(page, "keys-zh")

    fresh = open_page(locale="zh-CN")  # a Chinese browser gets Chinese at once
    fresh.goto("/")
    expect(fresh.get_by_role("heading", name="登录")).to_be_visible()
    shot(fresh, "login-zh")


def test_phone_layout_in_dark_mode(open_page: Callable[..., Page]) -> None:
    page = open_page("alice", viewport={"width": 390, "height": 844}, dark=True)
    go(page, "dashboard", "Dashboard")
    navigation = page.get_by_role("navigation", name="Main")
    menu = page.get_by_role("button", name="Menu")
    expect(navigation).to_be_hidden()
    shot(page, "phone-dashboard")
    menu.click()
    expect(menu).to_have_attribute("aria-expanded", "true")
    expect(navigation).to_be_visible()
    shot(page, "phone-menu")
    navigation.get_by_role("link", name="Usage logs").click()
    expect(page.get_by_role("heading", level=1, name="Usage logs")).to_be_visible()
    expect(navigation).to_be_hidden()
    shot(page, "phone-logs")


def test_periodic_budgets_on_the_keys_and_users_pages(open_page: Callable[..., Page], site: Site) -> None:
    # A key whose limit resets every day shows today's spend and when it resets; its limit is edited in place.
    page = open_page("alice")
    page.goto("/")
    nav(page, "API keys")
    page.get_by_role("button", name="Create a key").click()
    dialog = page.get_by_role("dialog", name="Create a key")
    dialog.get_by_label("Name").fill("daily-key")
    dialog.get_by_label("Spending limit (USD)").fill("1")
    dialog.get_by_label("Resets").select_option("daily")
    dialog.get_by_role("button", name="Create").click()
    page.get_by_role("dialog", name="Your new key").get_by_role("button", name="Done").click()
    row = page.get_by_role("row", name=re.compile("daily-key"))
    expect(row).to_contain_text(re.compile(r"\$0\.00 of \$1\.00 today · resets"))
    row.get_by_role("button", name="Edit daily-key").click()
    limit = page.get_by_role("dialog", name='Edit the key "daily-key"')
    expect(limit.get_by_label("Resets")).to_have_value("daily")
    limit.get_by_label("Resets").select_option("monthly")
    limit.get_by_role("button", name="Save").click()
    expect(row).to_contain_text("of $1.00 this month")
    shot(page, "keys-periodic-budget")

    # An administrator caps what a user spends per week, on top of the balance.
    made = site.admin.post("/api/users", json={"name": "capped-carol", "balance_micros": 1_000_000})
    assert made.status_code == 201, made.text
    admin = open_page("root")
    go(admin, "admin/users", "Users")
    carol = admin.get_by_role("row", name=re.compile(r"\bcapped-carol\b"))
    expect(carol).not_to_contain_text("this week")
    carol.get_by_role("button", name="Edit capped-carol").click()
    edit = admin.get_by_role("dialog")
    edit.get_by_label("Spend cap per period (USD)").fill("5")
    edit.get_by_label("Resets").select_option("weekly")
    edit.get_by_role("button", name="Save").click()
    expect(carol).to_contain_text(re.compile(r"\$0\.00 of \$5\.00 this week · resets"))
    shown = site.admin.get(f"/api/users/{made.json()['id']}").json()
    assert (shown["budget_micros"], shown["budget_period"]) == (5_000_000, "weekly"), shown

    # A capped user reads their own cap on the account page.
    alice = f"/api/users/{site.users['alice']['id']}"
    assert site.admin.patch(alice, json={"budget_micros": 100_000_000, "budget_period": "weekly"}).status_code == 200
    try:
        go(page, "account", "Account")
        expect(page.get_by_role("main")).to_contain_text(re.compile(r"of \$100\.00 this week · resets"))
    finally:
        site.admin.patch(alice, json={"budget_micros": None, "budget_period": None})
