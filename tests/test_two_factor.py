"""Two-factor sign-in over the API, on both backends: TOTP enrolment, the second sign-in step, replay and
guessing refused, single-use recovery codes, admins made to enrol, an admin's reset, secrets at rest."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pyotp
import pytest
from cryptography.fernet import Fernet
from sqlalchemy.orm import Session

from playwright.sync_api import Page, expect, sync_playwright

from polyrelay.api.admin.throttle import MAX_FAILURES
from polyrelay.store import crypto, models
from polyrelay.store.crypto import SECRET_KEY_ENV
from polyrelay.store.db import create_db_engine, migrate
from tests.conftest import Gateway, free_port, start_gateway, wait_until
from tests.test_console_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS

ADMIN_KEY = "admin-key-two-factor-0123456789"
PASSWORD = "two-factor-password"
USERS = ["ann", "ben", "cat", "dan", "eve", "fay", "gus"]
CSRF = {"X-Requested-With": "test"}


@pytest.fixture(scope="module")
def gateway(gateway_factory: Callable[..., Gateway]) -> Gateway:
    return gateway_factory({
        "admin_key": ADMIN_KEY,
        "security": {"require_2fa_for_admins": True},
        "users": [{"name": name, "password": PASSWORD} for name in USERS]
        + [{"name": "boss", "password": PASSWORD, "role": "admin"}],
    })


def client(gateway: Gateway, address: str = "127.0.0.1") -> httpx.Client:
    return httpx.Client(base_url=gateway.url, headers=CSRF, timeout=30,
                        transport=httpx.HTTPTransport(local_address=address))


def password_step(http: httpx.Client, name: str) -> httpx.Response:
    response = http.post("/api/auth/login", json={"name": name, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return response


def ticket_of(http: httpx.Client, name: str) -> str:
    answer = password_step(http, name).json()
    assert "user" not in answer and "polyrelay_session" not in http.cookies, answer
    return answer["second_factor"]["ticket"]


def step_now() -> int:
    return int(time.time()) // 30


class Authenticator:
    """The user's phone: codes of a secret, each for a time step later than any the gateway has accepted."""

    def __init__(self, secret: str) -> None:
        self.totp, self.last_step = pyotp.TOTP(secret), 0

    def code(self) -> str:
        # The gateway takes a step of skew each way; past that, wait for the clock to catch up.
        step = wait_until(lambda: max(step_now(), self.last_step + 1) if self.last_step < step_now() + 1 else None,
                          timeout=35, what="a TOTP step not used yet")
        self.last_step = step
        return self.totp.generate_otp(step)


def enrol(http: httpx.Client) -> tuple[Authenticator, list[str], dict[str, Any]]:
    begun = http.post("/api/me/2fa/totp")
    assert begun.status_code == 201, begun.text
    shown = begun.json()
    phone = Authenticator(shown["secret"])
    confirmed = http.post("/api/me/2fa/totp/confirm", json={"code": phone.code()})
    assert confirmed.status_code == 200, confirmed.text
    return phone, confirmed.json()["recovery_codes"], shown


def signed_in_with_totp(gateway: Gateway, name: str) -> tuple[httpx.Client, Authenticator, list[str]]:
    http = client(gateway)
    password_step(http, name)
    phone, codes, _ = enrol(http)
    return http, phone, codes


def second_step(http: httpx.Client, ticket: str, **proof: Any) -> httpx.Response:
    return http.post("/api/auth/second-factor", json={"ticket": ticket, **proof})


def test_enrolment_shows_the_secret_once_and_keeps_it_encrypted(gateway: Gateway) -> None:
    http = client(gateway)
    password_step(http, "ann")
    phone, codes, shown = enrol(http)
    assert shown["otpauth_uri"].startswith("otpauth://totp/polyrelay:ann?secret=" + shown["secret"])
    assert shown["qr_data_uri"].startswith("data:image/svg+xml")
    assert len(codes) == 10 and len(set(codes)) == 10
    status = http.get("/api/me/2fa").json()
    assert status == {"totp": True, "recovery_codes_left": 10, "passkeys": [], "passkeys_available": False,
                      "enrolment_required": False}
    for answer in (http.get("/api/me"), http.get("/api/me/2fa")):
        assert shown["secret"] not in answer.text
    again = http.post("/api/me/2fa/totp")
    assert again.status_code == 409 and shown["secret"] not in again.text
    stored = gateway.query("SELECT t.secret FROM user_totp t JOIN users u ON u.id = t.user_id WHERE u.name = 'ann'")
    sealed = stored[0].secret
    assert shown["secret"] not in sealed
    assert Fernet(os.environ[SECRET_KEY_ENV]).decrypt(sealed.encode()).decode() == shown["secret"]
    hashes = [row.code_hash for row in gateway.query("SELECT code_hash FROM user_recovery_codes")]
    assert not any(code in hashed or code.replace("-", "") in hashed for code in codes for hashed in hashes)


def test_sign_in_takes_a_code_after_the_password_and_refuses_a_replayed_one(gateway: Gateway) -> None:
    _, phone, _ = signed_in_with_totp(gateway, "ben")
    fresh = client(gateway)
    ticket = ticket_of(fresh, "ben")
    assert fresh.get("/api/me").status_code == 401  # a ticket is no session
    code = phone.code()
    signed_in = second_step(fresh, ticket, code=code)
    assert signed_in.status_code == 200, signed_in.text
    assert signed_in.json()["user"]["name"] == "ben"
    assert fresh.get("/api/me").json()["name"] == "ben"
    # The same code on a new ticket: seen once, refused for good.
    other = client(gateway)
    replayed = second_step(other, ticket_of(other, "ben"), code=code)
    assert replayed.status_code == 401 and replayed.json()["error"]["code"] == "invalid_code"
    # The ticket was single-use.
    assert second_step(other, ticket, code=phone.code()).json()["error"]["code"] == "invalid_ticket"


def test_a_code_from_minutes_ahead_is_refused(gateway: Gateway) -> None:
    _, phone, _ = signed_in_with_totp(gateway, "cat")
    http = client(gateway)
    ticket = ticket_of(http, "cat")
    too_late = phone.totp.generate_otp(step_now() + 3)  # past the skew (and past the confirming step)
    assert second_step(http, ticket, code=too_late).status_code == 401
    assert second_step(http, ticket, code=phone.code()).status_code == 200


def test_wrong_codes_are_throttled_like_wrong_passwords(gateway: Gateway) -> None:
    _, phone, _ = signed_in_with_totp(gateway, "dan")
    http = client(gateway, "127.0.3.7")
    ticket = ticket_of(http, "dan")
    right = phone.code()
    wrong = next(c for c in ("000000", "111111", "222222") if c != right)
    for _ in range(MAX_FAILURES):
        assert second_step(http, ticket, code=wrong).status_code == 401
    locked = second_step(http, ticket, code=right)
    assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0
    assert locked.json()["error"]["code"] == "too_many_attempts"
    # The lock holds the name at that address: from another one, the right code still works.
    elsewhere = client(gateway, "127.0.3.8")
    assert second_step(elsewhere, ticket_of(elsewhere, "dan"), code=right).status_code == 200


def test_recovery_codes_work_once_and_can_turn_totp_off(gateway: Gateway) -> None:
    _, _, codes = signed_in_with_totp(gateway, "eve")
    http = client(gateway)
    assert second_step(http, ticket_of(http, "eve"), recovery_code=codes[0].upper()).status_code == 200
    assert http.get("/api/me/2fa").json()["recovery_codes_left"] == 9
    again = client(gateway)
    assert second_step(again, ticket_of(again, "eve"), recovery_code=codes[0]).status_code == 401
    assert http.post("/api/me/2fa/totp/disable", json={"recovery_code": codes[0]}).status_code == 401
    assert http.post("/api/me/2fa/totp/disable", json={"recovery_code": codes[1]}).status_code == 204
    assert http.get("/api/me/2fa").json()["totp"] is False
    assert gateway.query("SELECT count(*) AS n FROM user_recovery_codes r JOIN users u ON u.id = r.user_id "
                         "WHERE u.name = 'eve'")[0].n == 0
    assert "user" in password_step(client(gateway), "eve").json()  # the password alone signs in again


def test_renewed_recovery_codes_replace_the_old_ones_and_a_code_turns_totp_off(gateway: Gateway) -> None:
    http, phone, old = signed_in_with_totp(gateway, "fay")
    renewed = http.post("/api/me/2fa/recovery-codes", json={"recovery_code": old[0]})
    assert renewed.status_code == 200, renewed.text
    new = renewed.json()["recovery_codes"]
    assert len(new) == 10 and not set(new) & set(old)
    other = client(gateway)
    assert second_step(other, ticket_of(other, "fay"), recovery_code=old[1]).status_code == 401
    assert second_step(other, ticket_of(other, "fay"), recovery_code=new[0]).status_code == 200
    assert http.post("/api/me/2fa/totp/disable", json={"code": "12345"}).status_code == 401
    assert http.post("/api/me/2fa/totp/disable", json={"code": phone.code()}).status_code == 204
    assert http.post("/api/me/2fa/totp/disable", json={"code": phone.code()}).status_code == 409


def test_admins_must_enrol_before_anything_else_and_an_admin_can_reset(gateway: Gateway) -> None:
    http = client(gateway)
    assert "user" in password_step(http, "boss").json()
    blocked = http.get("/api/users")
    assert blocked.status_code == 403 and blocked.json()["error"]["code"] == "second_factor_required"
    assert http.post("/api/me/tokens", json={"name": "k"}).status_code == 403
    assert http.get("/api/me").json()["must_enrol_second_factor"] is True
    assert http.get("/api/me/2fa").json()["enrolment_required"] is True
    enrol(http)
    assert http.get("/api/users").status_code == 200
    assert http.get("/api/me").json()["must_enrol_second_factor"] is False
    # The admin key is no console sign-in: unaffected.
    admin = httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)
    assert admin.get("/api/users").status_code == 200
    gus = client(gateway)
    password_step(gus, "gus")
    enrol(gus)
    gus_id = gus.get("/api/me").json()["id"]
    assert gus.delete(f"/api/users/{gus_id}/2fa").status_code == 403  # not an admin
    assert admin.delete("/api/users/2147483647/2fa").status_code == 404
    assert http.delete(f"/api/users/{gus_id}/2fa").status_code == 204
    assert "user" in password_step(client(gateway), "gus").json()
    # An admin's reset puts the admin back to enrolling: the rule is checked on every request.
    boss_id = http.get("/api/me").json()["id"]
    assert admin.delete(f"/api/users/{boss_id}/2fa").status_code == 204
    assert http.get("/api/users").status_code == 403


def test_bad_requests_are_refused_before_any_work(gateway: Gateway) -> None:
    http = client(gateway)
    assert second_step(http, "no-such-ticket", code="123456").json()["error"]["code"] == "invalid_ticket"
    both = second_step(http, "t", code="123456", recovery_code="abcde-fghij")
    assert both.status_code == 400 and both.json()["error"]["code"] == "invalid_field"
    assert second_step(http, "t", code="1" * 1000).status_code == 400
    assert http.post("/api/me/2fa/totp").status_code == 401
    passkeys_off = http.post("/api/auth/second-factor/passkey-options", json={"ticket": "t"})
    assert passkeys_off.status_code == 409 and passkeys_off.json()["error"]["code"] == "passkeys_unavailable"


def test_secret_rotate_re_encrypts_totp_secrets_with_the_channels_keys(database_factory: Callable[[], str]) -> None:
    engine = create_db_engine(database_factory())
    old, new = crypto.SecretKey(Fernet(Fernet.generate_key()), "old"), Fernet(Fernet.generate_key())
    try:
        migrate(engine)
        crypto.install(old)
        with Session(engine) as session, session.begin():
            session.add(models.UserTotp(user_id=1, secret="JBSWY3DPEHPK3PXP", active=True, last_step=0))
        crypto.rotate(engine, old, new)
        with pytest.raises(crypto.SecretKeyError, match="TOTP secret"):  # the old key no longer reads it
            with Session(engine) as session:
                session.get(models.UserTotp, 1)
        crypto.install(crypto.SecretKey(new, "new"))
        with Session(engine) as session:
            assert session.get(models.UserTotp, 1).secret == "JBSWY3DPEHPK3PXP"
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway the browser opens at http://localhost:PORT, its public_url: passkeys are bound to that host
    (WebAuthn takes no IP address as a relying party)."""
    workdir, port = tmp_path_factory.mktemp("two-factor-console"), free_port()
    gateway = start_gateway({
        "database_url": f"sqlite:///{workdir / 'polyrelay.db'}",
        "public_url": f"http://localhost:{port}",
        "users": [{"name": "pat", "password": PASSWORD}, {"name": "ops", "password": PASSWORD, "role": "admin"}],
    }, workdir, port=port)
    yield gateway
    gateway.stop()


def sign_in_with_password(page: Page, name: str = "pat") -> None:
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def sign_out(page: Page) -> None:
    page.locator("nav .sign-out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


def test_in_chromium_enrol_totp_and_a_passkey_then_sign_in_with_each(console: Gateway) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    port = console.url.rsplit(":", 1)[1]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(base_url=f"http://localhost:{port}", viewport={"width": 1280, "height": 900})
        page = context.new_page()
        problems: list[str] = []
        page.on("pageerror", lambda error: problems.append(str(error)))
        # Chromium's virtual authenticator: a platform passkey store that verifies the user, driven over CDP.
        cdp = context.new_cdp_session(page)
        cdp.send("WebAuthn.enable")
        authenticator = cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
            "protocol": "ctap2", "transport": "internal", "hasResidentKey": True, "hasUserVerification": True,
            "isUserVerified": True, "automaticPresenceSimulation": True}})["authenticatorId"]

        page.goto("/#/account")
        sign_in_with_password(page)
        card = page.locator("section.twofa")
        card.get_by_role("button", name="Set up an authenticator app").click()
        expect(card.get_by_role("img", name="QR code of the authenticator key")).to_be_visible()
        phone = Authenticator(card.get_by_label("Key").input_value())
        card.get_by_label("Six-digit code").fill(phone.code())
        card.get_by_role("button", name="Turn on").click()
        codes = card.get_by_label("Recovery codes")
        expect(codes).to_be_visible()
        assert len(codes.input_value().split("\n")) == 10
        expect(card.get_by_text("Authenticator app on")).to_be_visible()
        card.get_by_label("Name").fill("virtual key")
        with page.expect_request(lambda r: r.url.endswith("/api/me/2fa/passkeys") and r.method == "POST") as made:
            card.get_by_role("button", name="Add a passkey").click()
        expect(card.get_by_role("cell", name="virtual key")).to_be_visible()
        # The registration's challenge was single-use: the same answer again is refused.
        again = page.request.post("/api/me/2fa/passkeys", data=made.value.post_data_json, headers=CSRF)
        assert again.status == 400 and again.json()["error"]["code"] == "invalid_challenge"
        assert len(cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})["credentials"]) == 1
        page.screenshot(path=str(ARTIFACTS / "two-factor-account.png"), full_page=True)

        sign_out(page)
        sign_in_with_password(page)
        expect(page.get_by_role("heading", name="Two-factor sign-in")).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "two-factor-sign-in.png"), full_page=True)
        page.get_by_label("Six-digit code").fill("000000" if phone.totp.now() != "000000" else "111111")
        page.get_by_role("button", name="Verify").click()
        expect(page.get_by_role("alert")).to_have_text("The code is wrong, expired or was already used.")
        page.get_by_label("Six-digit code").fill(phone.code())
        page.get_by_role("button", name="Verify").click()
        expect(page.locator(".topbar .who .name")).to_have_text("pat")

        sign_out(page)
        sign_in_with_password(page)
        with page.expect_request(lambda r: r.url.endswith("/api/auth/second-factor")) as answered:
            page.get_by_role("button", name="Use a passkey").click()
        expect(page.locator(".topbar .who .name")).to_have_text("pat")
        # A recorded passkey answer signs nothing else: not its finished ticket, not a fresh one.
        replay = answered.value.post_data_json
        assert page.request.post("/api/auth/second-factor", data=replay).status == 401
        fresh = page.request.post("/api/auth/login", data={"name": "pat", "password": PASSWORD}).json()
        refused = page.request.post("/api/auth/second-factor",
                                    data={**replay, "ticket": fresh["second_factor"]["ticket"]})
        assert refused.status == 401 and refused.json()["error"]["code"] == "invalid_code"
        signed = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})["credentials"][0]
        assert signed["signCount"] >= 1
        stored = console.query("SELECT sign_count, last_used_at FROM user_passkeys")
        assert stored[0].sign_count == signed["signCount"] and stored[0].last_used_at is not None
        # A copy of the passkey whose counter went back (a cloned authenticator) is refused.
        cdp.send("WebAuthn.removeCredential", {"authenticatorId": authenticator, "credentialId": signed["credentialId"]})
        cdp.send("WebAuthn.addCredential", {"authenticatorId": authenticator, "credential": {**signed, "signCount": 0}})
        sign_out(page)
        sign_in_with_password(page)
        page.get_by_role("button", name="Use a passkey").click()
        expect(page.get_by_role("alert")).to_have_text("The passkey was not accepted.")
        assert console.query("SELECT sign_count FROM user_passkeys")[0].sign_count == signed["signCount"]

        # Lost everything: an administrator resets pat's second factors, and the password alone signs in.
        admin = context.browser.new_context(base_url=f"http://localhost:{port}").new_page()
        admin.goto("/#/admin/users")
        sign_in_with_password(admin, "ops")
        admin.get_by_role("button", name="Reset 2FA pat").click()
        admin.get_by_role("dialog").get_by_role("button", name="Reset 2FA").click()
        expect(admin.get_by_text("Two-factor sign-in of pat was reset.")).to_be_visible()
        page.get_by_role("button", name="Start over").click()
        sign_in_with_password(page)
        expect(page.locator(".topbar .who .name")).to_have_text("pat")
        assert console.query("SELECT count(*) AS n FROM user_passkeys")[0].n == 0
        assert problems == []
        context.close()
        browser.close()
