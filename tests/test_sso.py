"""Single sign-on against a real OpenID Connect provider (panva/oidc-provider under tests/oidc, run with the
machine's Node.js), a lying issuer (tests/fakes/oidc_issuer.py) and a fake GitHub (tests/fakes/github_oauth.py).

The flow through the provider's own sign-in and consent pages is driven over HTTP on both backends (linking by
verified e-mail, provisioning, refusals, linking while signed in) and once through the console in Chromium.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest
from pydantic import ValidationError
from playwright.sync_api import Page, expect, sync_playwright

from polyrelay.api.sso import oidc
from polyrelay.api.sso.identity import Pending
from polyrelay.api.sso.remote import ProviderError
from polyrelay.api.sso.settings import SsoSettings
from tests.conftest import Gateway, free_port, start_gateway
from tests.fakes import github_oauth, oidc_issuer
from tests.fakes.server import FakeServer

OIDC_DIR = Path(__file__).resolve().parent / "oidc"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "sso"
ADMIN_KEY = "admin-key-sso-0123456789"
CLIENT_ID = "polyrelay-test"
CLIENT_SECRET = "oidc-client-secret-0123456789abcdef"
# The accounts at the real provider: any password signs them in (its development sign-in pages).
ACCOUNTS = {
    "alice": {"email": "alice@example.com", "email_verified": True},
    "mallory": {"email": "Alice@Example.com", "email_verified": False},  # claims alice's address, unproven
    "newbie": {"email": "newbie@example.org", "email_verified": True},
    "outsider": {"email": "someone@elsewhere.test", "email_verified": True},
    "alice-work": {"email": "alice@work.example", "email_verified": True},
    "nomail": {},
    "solo": {"email": "solo@example.org", "email_verified": True},
}
SECRETS = (CLIENT_SECRET, github_oauth.CLIENT_SECRET, oidc_issuer.CLIENT_SECRET)


@dataclass
class Idp:
    issuer: str
    forge: FakeServer
    github: FakeServer


@pytest.fixture(scope="module")
def idp() -> Iterator[Idp]:
    """One real OIDC provider for the module (and the two fakes)."""
    assert (OIDC_DIR / "node_modules" / "oidc-provider").is_dir(), "run scripts/oidc.sh (make test does)"
    port = free_port()
    config = {"port": port, "accounts": ACCOUNTS, "clients": [{
        "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "token_endpoint_auth_method": "client_secret_basic",
        # RFC 8252: a loopback redirect URI matches on any port, so every test gateway can use this client.
        "application_type": "native",
        "redirect_uris": [f"http://127.0.0.1/api/auth/sso/{name}/callback" for name in ("corp", "staff")],
    }]}
    process = subprocess.Popen(["node", "provider.mjs", json.dumps(config)], cwd=OIDC_DIR, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    try:
        line = process.stdout.readline() if process.stdout else ""  # blocks until it serves, or exits
        assert line.startswith("listening "), f"the OIDC provider did not start ({line!r}, exit {process.poll()})"
        forge = FakeServer(oidc_issuer.create_app()).start()
        github = FakeServer(github_oauth.create_app()).start()
        yield Idp(line.split()[1], forge, github)
        forge.stop()
        github.stop()
    finally:
        process.terminate()
        process.wait(10)


def sso_config(idp: Idp) -> dict[str, object]:
    return {"admin_key": ADMIN_KEY, "sso": {"allow_private_hosts": True, "providers": [  # loopback: tests only
        {"name": "corp", "label": "Corp SSO", "issuer": idp.issuer, "client_id": CLIENT_ID,
         "client_secret": CLIENT_SECRET},
        {"name": "staff", "issuer": idp.issuer, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
         "auto_provision": True, "group": "sso-staff", "allowed_domains": ["example.org"]},
        {"name": "forge", "issuer": idp.forge.url, "client_id": oidc_issuer.CLIENT_ID,
         "client_secret": oidc_issuer.CLIENT_SECRET},
        {"name": "github", "kind": "github", "label": "GitHub", "client_id": github_oauth.CLIENT_ID,
         "client_secret": github_oauth.CLIENT_SECRET, "github_url": idp.github.url,
         "github_api_url": idp.github.url},
    ]}}


@pytest.fixture(scope="module")
def gateway(gateway_factory: Callable[..., Gateway], idp: Idp) -> Gateway:
    gateway = gateway_factory(sso_config(idp))
    with httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as admin:
        for name, email in (("alice", "alice@example.com"), ("bob", "bob@example.com"),
                            ("octo", "octo@example.com")):
            created = admin.post("/api/users", json={"name": name, "password": f"{name}-password-1",
                                                     "email": email, "email_verified": True})
            assert created.status_code == 201, created.text
    return gateway


def through_provider(client: httpx.Client, url: str, gateway: Gateway, login: str | None) -> str:
    """Follow ``url`` (a gateway start) to the provider, sign in there as ``login`` and consent, as a person
    would on its pages; return the URL the provider sends the browser back to on the gateway."""
    for cookie in list(client.cookies.jar):  # a new visit to the provider: no session of an earlier one there
        if not cookie.name.startswith("polyrelay"):
            client.cookies.jar.clear(cookie.domain, cookie.path, cookie.name)
    seen_gateway = False
    for _ in range(20):
        if url.startswith(gateway.url) and seen_gateway:
            return url
        seen_gateway = True
        response = client.get(url)
        if response.is_redirect:
            url = urljoin(url, response.headers["location"])
            continue
        form = re.search(r'<form[^>]*action="([^"]+)"', response.text)
        assert response.status_code == 200 and form, response.text[:500]
        prompt = re.search(r'name="prompt" value="(\w+)"', response.text)
        fields = {"prompt": prompt.group(1)} if prompt else {}
        if fields.get("prompt") == "login":
            fields |= {"login": login, "password": "any password"}
        answer = client.post(urljoin(url, form.group(1)), data=fields)
        assert answer.is_redirect, answer.text[:500]
        url = urljoin(url, answer.headers["location"])
    raise AssertionError("the provider never sent the browser back")


def sign_in_via(gateway: Gateway, provider: str, login: str | None = None,
                client: httpx.Client | None = None) -> tuple[httpx.Client, httpx.Response]:
    """A browser-like client that went through ``provider`` as ``login``; the gateway's answer to the callback."""
    client = client or httpx.Client(timeout=30)
    callback = through_provider(client, f"{gateway.url}/api/auth/sso/{provider}/start", gateway, login)
    return client, client.get(callback)


def landed(response: httpx.Response) -> str:
    """Where the callback sent the browser: the console hash route, with its query."""
    assert response.status_code == 303, response.text
    return response.headers["location"]


def me(client: httpx.Client, gateway: Gateway) -> httpx.Response:
    return client.get(gateway.url + "/api/me")


def identities_of(gateway: Gateway, user: str) -> list[tuple[str, str | None]]:
    return [(row.provider, row.email) for row in gateway.query(
        "SELECT i.provider, i.email FROM user_identities i JOIN users u ON u.id = i.user_id WHERE u.name = :n "
        "ORDER BY i.id", n=user)]


def test_settings_refuse_an_oidc_provider_without_issuer_and_hide_secrets() -> None:
    with pytest.raises(ValidationError, match="needs 'issuer'"):
        SsoSettings(providers=[{"name": "corp", "client_id": "x", "client_secret": "y"}])
    settings = SsoSettings(providers=[{"name": "gh", "kind": "github", "client_id": "x", "client_secret": CLIENT_SECRET}])
    assert CLIENT_SECRET not in repr(settings) and CLIENT_SECRET not in settings.model_dump_json()
    assert settings.providers[0].scope == "read:user user:email"


def test_the_sign_in_page_lists_the_providers_and_nothing_secret(gateway: Gateway) -> None:
    answer = httpx.get(gateway.url + "/api/auth/sso")
    assert answer.status_code == 200
    assert answer.json()["data"][0] == {"name": "corp", "kind": "oidc", "label": "Corp SSO"}
    assert [p["label"] for p in answer.json()["data"]] == ["Corp SSO", "staff", "forge", "GitHub"]
    assert not any(secret in answer.text for secret in SECRETS)
    unknown = httpx.get(gateway.url + "/api/auth/sso/nope/start")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_provider"


def test_start_sends_state_nonce_and_an_s256_challenge(gateway: Gateway, idp: Idp) -> None:
    started = httpx.get(gateway.url + "/api/auth/sso/corp/start")
    assert started.status_code == 303
    target = urlsplit(started.headers["location"])
    assert f"{target.scheme}://{target.netloc}" == idp.issuer
    query = {key: values[0] for key, values in parse_qs(target.query).items()}
    assert query["response_type"] == "code" and query["client_id"] == CLIENT_ID
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert len(query["state"]) >= 32 and len(query["nonce"]) >= 32
    assert query["redirect_uri"] == gateway.url + "/api/auth/sso/corp/callback"
    cookie = started.headers["set-cookie"]
    assert "polyrelay_sso=" in cookie and "HttpOnly" in cookie and "Path=/api/auth/sso" in cookie
    assert query["state"] not in cookie and query["nonce"] not in cookie  # encrypted, not just signed


def test_a_verified_email_links_the_existing_user_and_the_identity_signs_in_after(gateway: Gateway) -> None:
    client, answer = sign_in_via(gateway, "corp", "alice")
    assert landed(answer) == "/#/dashboard"
    assert "polyrelay_session=" in answer.headers["set-cookie"]
    assert me(client, gateway).json()["name"] == "alice"
    assert identities_of(gateway, "alice") == [("corp", "alice@example.com")]
    # The link is to the identity now, not to the address: a changed address still signs alice in.
    with httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as admin:
        alice = next(u for u in admin.get("/api/users").json()["data"] if u["name"] == "alice")
        assert admin.patch(f"/api/users/{alice['id']}", json={"email": "alice@new.example"}).status_code == 200
    again, answer = sign_in_via(gateway, "corp", "alice")
    assert landed(answer) == "/#/dashboard" and me(again, gateway).json()["name"] == "alice"
    assert not any(secret in gateway.logs() for secret in SECRETS)


def test_an_unverified_email_is_never_linked(gateway: Gateway) -> None:
    client, answer = sign_in_via(gateway, "corp", "mallory")
    assert landed(answer) == "/#/login?sso_error=email_not_verified"
    assert "polyrelay_session" not in answer.headers.get("set-cookie", "")
    assert me(client, gateway).status_code == 401
    assert gateway.query("SELECT count(*) FROM user_identities WHERE subject = 'mallory'")[0][0] == 0
    _, answer = sign_in_via(gateway, "corp", "nomail")
    assert landed(answer) == "/#/login?sso_error=no_account"


def test_auto_provisioning_puts_new_users_in_the_group_for_allowed_domains_only(gateway: Gateway) -> None:
    client, answer = sign_in_via(gateway, "staff", "newbie")
    assert landed(answer) == "/#/dashboard"
    user = me(client, gateway).json()
    assert (user["name"], user["group"], user["email"], user["email_verified"]) == (
        "newbie", "sso-staff", "newbie@example.org", True)
    assert user["has_password"] is False and user["role"] == "user"
    _, answer = sign_in_via(gateway, "staff", "outsider")
    assert landed(answer) == "/#/login?sso_error=domain_not_allowed"
    assert gateway.query("SELECT count(*) FROM users WHERE email = 'someone@elsewhere.test'")[0][0] == 0
    # A provider without provisioning refuses someone it cannot link, rather than creating a user.
    _, answer = sign_in_via(gateway, "corp", "outsider")
    assert landed(answer) == "/#/login?sso_error=no_account"


def test_a_callback_without_its_browser_state_is_refused(gateway: Gateway) -> None:
    client = httpx.Client(timeout=30)
    callback = through_provider(client, f"{gateway.url}/api/auth/sso/corp/start", gateway, "alice")
    stranger = httpx.get(callback)  # another browser (no state cookie) bringing alice's code: login CSRF
    assert landed(stranger) == "/#/login?sso_error=invalid_state"
    assert "polyrelay_session" not in stranger.headers.get("set-cookie", "")
    tampered = client.get(re.sub(r"state=[^&]+", "state=forged", callback))  # this browser, another state
    assert landed(tampered) == "/#/login?sso_error=invalid_state"


def test_a_replayed_callback_signs_in_once(gateway: Gateway) -> None:
    client = httpx.Client(timeout=30)
    callback = through_provider(client, f"{gateway.url}/api/auth/sso/corp/start", gateway, "alice")
    state_cookie = client.cookies["polyrelay_sso"]
    assert landed(client.get(callback)) == "/#/dashboard"
    replay = httpx.Client(timeout=30, cookies={"polyrelay_sso": state_cookie})
    answer = replay.get(callback)
    assert landed(answer) == "/#/login?sso_error=invalid_state"
    assert "polyrelay_session" not in answer.headers.get("set-cookie", "")


@pytest.mark.parametrize(("knobs", "why"), [
    ({"forge": {"aud": "someone-else"}}, "audience"),
    ({"forge": {"aud": [oidc_issuer.CLIENT_ID, "someone-else"]}}, "several audiences, no azp"),
    ({"forge": {"nonce": "a-nonce-of-another-flow"}}, "nonce"),
    ({"forge": {"nonce": None}}, "no nonce"),
    ({"forge": {"iss": "https://evil.example"}}, "issuer"),
    ({"forge": {"exp": 1_000_000_000}}, "expired"),
    ({"sign_with": "stranger"}, "a key the JWKS does not hold"),
    ({"sign_with": "hs256"}, "HS256 with the client secret"),
])
def test_a_dishonest_id_token_is_refused(gateway: Gateway, idp: Idp, knobs: dict[str, object], why: str) -> None:
    idp.forge.knobs.update(knobs)
    try:
        client, answer = sign_in_via(gateway, "forge")
    finally:
        idp.forge.knobs.update({"forge": {}, "sign_with": None})
    assert landed(answer) == "/#/login?sso_error=invalid_id_token", why
    assert me(client, gateway).status_code == 401
    honest, answer = sign_in_via(gateway, "forge")  # the same issuer, honest again: bob signs in
    assert landed(answer) == "/#/dashboard" and me(honest, gateway).json()["name"] == "bob"


def test_a_sign_in_cancelled_at_the_provider_says_so(gateway: Gateway, idp: Idp) -> None:
    idp.forge.knobs["deny"] = True
    try:
        client, answer = sign_in_via(gateway, "forge")
    finally:
        idp.forge.knobs["deny"] = False
    assert landed(answer) == "/#/login?sso_error=access_denied"
    assert me(client, gateway).status_code == 401


def test_an_issuer_on_a_private_address_needs_the_operator_s_consent(idp: Idp) -> None:
    """Discovery goes through the checked outbound fetch: loopback (here) is refused unless allowed."""
    settings = SsoSettings(providers=[{"name": "corp", "issuer": idp.issuer, "client_id": CLIENT_ID,
                                       "client_secret": CLIENT_SECRET}])
    pending = Pending.new("corp", "http://127.0.0.1/api/auth/sso/corp/callback", None)
    with pytest.raises(ProviderError) as refused:
        asyncio.run(oidc.authorization_url(settings, settings.providers[0], pending))
    assert refused.value.code == "discovery_failed" and "not a public address" in str(refused.value)
    allowed = settings.model_copy(update={"allow_private_hosts": True})
    assert asyncio.run(oidc.authorization_url(allowed, allowed.providers[0], pending)).startswith(idp.issuer + "/auth?")


def test_github_signs_in_by_its_primary_verified_email_only(gateway: Gateway, idp: Idp) -> None:
    idp.github.knobs["login"] = "sneaky"  # primary address octo@example.com, unverified at GitHub
    client, answer = sign_in_via(gateway, "github")
    assert landed(answer) == "/#/login?sso_error=email_not_verified"
    idp.github.knobs["login"] = "octocat"
    client, answer = sign_in_via(gateway, "github")
    assert landed(answer) == "/#/dashboard" and me(client, gateway).json()["name"] == "octo"
    assert identities_of(gateway, "octo") == [("github", "octo@example.com")]
    token_call = idp.github.last("/login/oauth/access_token")
    assert parse_qs(token_call.body.decode())["code_verifier"][0]  # PKCE with GitHub too
    assert not any(secret in gateway.logs() for secret in SECRETS)


def test_linking_while_signed_in_then_listing_and_removing(gateway: Gateway) -> None:
    client = httpx.Client(base_url=gateway.url, timeout=30, headers={"X-Requested-With": "test"})
    assert client.post("/api/auth/login", json={"name": "bob", "password": "bob-password-1"}).status_code == 200
    callback = through_provider(client, f"{gateway.url}/api/auth/sso/corp/start?link=1", gateway, "alice-work")
    assert landed(client.get(callback)) == "/#/account?sso_linked=corp"
    listed = client.get("/api/me/identities").json()["data"]
    assert [(i["provider"], i["label"], i["email"]) for i in listed if i["provider"] == "corp"] == [
        ("corp", "Corp SSO", "alice@work.example")]
    # Now alice-work signs bob in.
    other, answer = sign_in_via(gateway, "corp", "alice-work")
    assert landed(answer) == "/#/dashboard" and me(other, gateway).json()["name"] == "bob"
    # Alice's identity is alice's: linking it to bob is refused.
    callback = through_provider(client, f"{gateway.url}/api/auth/sso/corp/start?link=1", gateway, "alice")
    assert landed(client.get(callback)) == "/#/account?sso_error=identity_in_use"
    # Someone else's identity cannot be removed; one's own can.
    alice_identity = gateway.query("SELECT i.id FROM user_identities i JOIN users u ON u.id = i.user_id "
                                   "WHERE u.name = 'alice'")[0][0]
    assert client.delete(f"/api/me/identities/{alice_identity}").status_code == 404
    corp = next(i for i in listed if i["provider"] == "corp")
    assert client.delete(f"/api/me/identities/{corp['id']}").status_code == 204
    _, answer = sign_in_via(gateway, "corp", "alice-work")
    assert landed(answer) == "/#/login?sso_error=no_account"
    # A linking start needs a signed-in user, and its callback the same one still signed in.
    assert httpx.get(gateway.url + "/api/auth/sso/corp/start?link=1").status_code == 401
    callback = through_provider(client, f"{gateway.url}/api/auth/sso/corp/start?link=1", gateway, "alice-work")
    assert client.post("/api/auth/logout").status_code == 204
    assert landed(client.get(callback)) == "/#/account?sso_error=invalid_state"
    assert ("corp", "alice@work.example") not in identities_of(gateway, "bob")


def test_the_last_way_in_of_a_user_without_password_stays(gateway: Gateway) -> None:
    client, answer = sign_in_via(gateway, "staff", "solo")
    assert landed(answer) == "/#/dashboard"
    client.headers["X-Requested-With"] = "test"
    only = client.get(gateway.url + "/api/me/identities").json()["data"]
    assert len(only) == 1
    refused = client.delete(f"{gateway.url}/api/me/identities/{only[0]['id']}")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "last_sign_in"


@pytest.fixture(scope="module")
def console(idp: Idp, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway for the browser (SQLite: the API underneath runs on both backends above), with alice."""
    workdir = tmp_path_factory.mktemp("sso-console")
    gateway = start_gateway({"database_url": f"sqlite:///{workdir / 'polyrelay.db'}", **sso_config(idp)}, workdir)
    created = httpx.post(gateway.url + "/api/users", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, json={
        "name": "alice", "password": "alice-password-1", "email": "alice@example.com", "email_verified": True})
    assert created.status_code == 201, created.text
    yield gateway
    gateway.stop()


def at_provider_as(page: Page, idp: Idp, login: str | None) -> None:
    """Sign in on the provider's own pages (``None``: it still knows who this is), then consent, as a person does."""
    page.wait_for_url(f"{idp.issuer}/interaction/**")
    if login is not None:
        page.locator('input[name="login"]').fill(login)
        page.locator('input[name="password"]').fill("any password")
        page.get_by_role("button", name="Sign-in").click()
    page.get_by_role("button", name="Continue").click()


def test_sign_in_link_and_unlink_through_the_console_in_chromium(console: Gateway, idp: Idp) -> None:
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: make test installs it (scripts/browser.sh)"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    expect.set_options(timeout=10_000)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_context(base_url=console.url, locale="en-US").new_page()
        page.goto("/")
        expect(page.get_by_role("link", name="Sign in with GitHub")).to_be_visible()
        page.screenshot(path=ARTIFACTS / "sign-in.png", full_page=True)
        page.get_by_role("link", name="Sign in with Corp SSO").click()
        at_provider_as(page, idp, "alice")
        page.wait_for_url(f"{console.url}/#/dashboard")
        expect(page.get_by_role("button", name="Sign out")).to_be_visible()

        page.goto("/#/account")
        identities = page.get_by_role("region", name="Single sign-on")
        expect(identities).to_contain_text("Corp SSO")
        expect(identities).to_contain_text("alice@example.com")
        page.screenshot(path=ARTIFACTS / "account.png", full_page=True)
        page.get_by_role("button", name="Delete Corp SSO").click()
        page.get_by_role("dialog").get_by_role("button", name="Delete").click()
        expect(page.get_by_text("No sign-in provider is linked to your account.")).to_be_visible()
        # Linking it again from the account page: the provider still knows alice, and asks for consent only.
        page.get_by_role("link", name="Link Corp SSO").click()
        at_provider_as(page, idp, None)
        page.wait_for_url(f"{console.url}/#/account?sso_linked=corp")
        expect(page.get_by_role("status").filter(has_text="linked")).to_be_visible()
        expect(page.get_by_role("region", name="Single sign-on")).to_contain_text("alice@example.com")

        # Someone whose address the provider never verified lands on the sign-in page with the reason, in Chinese.
        page = browser.new_context(base_url=console.url, locale="zh-CN").new_page()
        page.goto("/")
        page.get_by_role("link", name="使用 Corp SSO 登录").click()
        at_provider_as(page, idp, "mallory")
        page.wait_for_url(f"{console.url}/#/login?sso_error=email_not_verified")
        expect(page.get_by_role("alert")).to_have_text("提供方未验证你的邮箱，无法与账户匹配。")
        page.screenshot(path=ARTIFACTS / "refused-zh-CN.png", full_page=True)
        browser.close()
