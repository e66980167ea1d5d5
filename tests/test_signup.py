"""Self-service accounts (issue 17): sign-up in its three modes, e-mail verification and password reset by
mailed links, address rules, the per-address limit, and invitation rewards. A real SMTP server on loopback
(``aiosmtpd``) receives the mail; the tests read the links out of it the way a user would."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tests.conftest import Gateway, wait_until
from tests.fakes.mailbox import Mailbox, smtp_server

ADMIN_KEY = "admin-key-signup-0123456789"
PUBLIC_URL = "https://console.example.test"
LINK = re.compile(re.escape(PUBLIC_URL) + r"/#/(verify|reset)\?token=([A-Za-z0-9_-]+)")
PASSWORD = "a-long-password"


@dataclass
class Site:
    """Gateways of one backend by sign-up mode, started on first use, sharing one SMTP server."""

    start: Callable[[str], Gateway]
    mailbox: Mailbox
    started: dict[str, Gateway] = field(default_factory=dict)

    def gateway(self, mode: str) -> Gateway:
        if mode not in self.started:
            self.started[mode] = self.start(mode)
        return self.started[mode]

    def post(self, mode: str, path: str, body: dict[str, Any], client: httpx.Client | None = None) -> httpx.Response:
        if client is not None:
            return client.post(path, json=body, headers={"X-Requested-With": "test"})
        return httpx.post(self.gateway(mode).url + path, json=body, timeout=20)

    def admin(self, mode: str, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        return httpx.request(method, self.gateway(mode).url + path, json=body, timeout=20,
                             headers={"Authorization": f"Bearer {ADMIN_KEY}"})

    def link(self, address: str, kind: str, count: int = 1) -> str:
        """The token of the ``count``-th ``kind`` link mailed to ``address`` (waits for it)."""
        def found() -> list[str]:
            return [m for m in (LINK.search(mail.get_content()) for mail in self.mailbox.to(address)) if m
                    and m.group(1) == kind]
        matches = wait_until(lambda: len(found()) >= count and found(), what=f"{kind} mail #{count} to {address}")
        return matches[count - 1].group(2)

    def mails(self, address: str) -> int:
        return len(self.mailbox.to(address))

    def session(self, mode: str, name: str, password: str = PASSWORD) -> httpx.Client:
        client = httpx.Client(base_url=self.gateway(mode).url, timeout=20)
        response = client.post("/api/auth/login", json={"name": name, "password": password})
        assert response.status_code == 200, response.text
        return client


MODES: dict[str, dict[str, Any]] = {
    "open": {"mode": "open", "default_group": "newcomers", "starting_balance_usd": 0.5,
             "denied_domains": ["blocked.test"], "per_ip_per_hour": 50, "resend_interval_s": 0},
    "invite-only": {"mode": "invite-only", "allowed_domains": ["example.test"], "per_ip_per_hour": 3},
    "closed": {},
}


@pytest.fixture(scope="module")
def site(gateway_factory: Callable[..., Gateway]) -> Iterator[Site]:
    mailbox = Mailbox()
    smtp = smtp_server(mailbox)

    def start(mode: str) -> Gateway:
        config: dict[str, Any] = {"admin_key": ADMIN_KEY, "signup": MODES[mode]}
        if mode != "closed":  # a closed gateway sends no mail: reset requests say so
            config["smtp"] = {"host": "127.0.0.1", "port": smtp.port, "starttls": False, "from": "relay@example.test"}
            config["signup"] = {**MODES[mode], "public_url": PUBLIC_URL}
            config["invitations"] = {"reward_fixed_usd": 1.0, "reward_share_of_first_topup": 0.1,
                                     "max_rewarded_invites_per_user": 1}
        return gateway_factory(config)

    yield Site(start, mailbox)
    smtp.stop()


def sign_up(site: Site, mode: str, name: str, email: str, **extra: Any) -> httpx.Response:
    return site.post(mode, "/api/auth/signup", {"name": name, "email": email, "password": PASSWORD, **extra})


def expire_tokens(gateway: Gateway, user_id: int) -> None:
    with gateway.db.begin() as connection:
        connection.execute(text("UPDATE account_tokens SET expires_at = :past WHERE user_id = :user"),
                           {"past": datetime.now(timezone.utc) - timedelta(seconds=1), "user": user_id})


def test_a_closed_gateway_refuses_sign_up_and_says_it_sends_no_mail(site: Site) -> None:
    assert httpx.get(site.gateway("closed").url + "/api/auth/signup").json()["mode"] == "closed"
    refused = sign_up(site, "closed", "walker", "walker@example.test")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "signup_closed"
    forgot = site.post("closed", "/api/auth/password/forgot", {"email": "walker@example.test"})
    assert forgot.status_code == 403 and forgot.json()["error"]["code"] == "mail_unavailable"


def test_sign_up_verify_by_the_mailed_link_then_sign_in(site: Site) -> None:
    options = httpx.get(site.gateway("open").url + "/api/auth/signup").json()
    assert options == {"mode": "open", "require_email_verification": True, "allowed_domains": [],
                       "password_reset": True}
    created = sign_up(site, "open", "ada", "Ada@Example.test")
    assert created.status_code == 201, created.text
    user = created.json()["user"]
    assert (user["email"], user["email_verified"], user["group"], user["balance_micros"]) == \
        ("ada@example.test", False, "newcomers", 500_000)
    assert created.json()["verification_sent"] is True
    assert PASSWORD not in created.text

    early = site.post("open", "/api/auth/login", {"name": "ada", "password": PASSWORD})
    assert early.status_code == 403 and early.json()["error"]["code"] == "email_unverified"

    token = site.link("ada@example.test", "verify")
    assert httpx.get(site.gateway("open").url + "/").status_code == 200  # where the link lands: the console
    assert site.post("open", "/api/auth/verify", {"token": token}).json() == {"verified": True}
    replayed = site.post("open", "/api/auth/verify", {"token": token})
    assert replayed.status_code == 400 and replayed.json()["error"]["code"] == "invalid_token"

    me = site.session("open", "ada").get("/api/me").json()
    assert me["email_verified"] is True and me["balance_micros"] == 500_000
    ledger = site.admin("open", "GET", f"/api/users/{user['id']}/ledger").json()["data"]
    assert [(e["kind"], e["amount_micros"]) for e in ledger] == [("signup", 500_000)]


def test_sign_up_refuses_taken_names_bad_passwords_and_denied_or_disposable_domains(site: Site) -> None:
    sign_up(site, "open", "grace", "grace@example.test").raise_for_status()
    for name, email, code in (("grace", "other@example.test", "conflict"),
                              ("grace2", "grace@example.test", "conflict"),
                              ("eve", "eve@blocked.test", "email_not_allowed"),
                              ("eve", "eve@mail.blocked.test", "email_not_allowed"),
                              ("eve", "eve@mailinator.com", "email_not_allowed"),
                              ("eve", "not-an-address", "invalid_field")):
        refused = sign_up(site, "open", name, email)
        assert refused.json()["error"]["code"] == code, (email, refused.text)
    short = site.post("open", "/api/auth/signup", {"name": "eve", "email": "eve@example.test", "password": "short"})
    assert short.status_code == 400 and "password" in short.json()["error"]["message"]


def test_an_expired_verification_link_is_refused_and_a_new_one_works(site: Site) -> None:
    user = sign_up(site, "open", "linus", "linus@example.test").json()["user"]
    old = site.link("linus@example.test", "verify")
    expire_tokens(site.gateway("open"), user["id"])
    expired = site.post("open", "/api/auth/verify", {"token": old})
    assert expired.status_code == 400 and expired.json()["error"]["code"] == "invalid_token"

    assert site.post("open", "/api/auth/verify/resend", {"email": "linus@example.test"}).json() == {"accepted": True}
    fresh = site.link("linus@example.test", "verify", count=2)
    assert fresh != old
    assert site.post("open", "/api/auth/verify", {"token": fresh}).status_code == 200
    site.session("open", "linus")


def test_a_password_reset_by_mail_ends_every_session_and_works_once(site: Site) -> None:
    user = sign_up(site, "open", "barbara", "barbara@example.test").json()["user"]
    site.post("open", "/api/auth/verify", {"token": site.link("barbara@example.test", "verify")}).raise_for_status()
    signed_in = site.session("open", "barbara")

    unknown = site.post("open", "/api/auth/password/forgot", {"email": "nobody@example.test"})
    known = site.post("open", "/api/auth/password/forgot", {"email": "barbara@example.test"})
    assert unknown.status_code == known.status_code == 200 and unknown.json() == known.json()
    token = site.link("barbara@example.test", "reset")

    short = site.post("open", "/api/auth/password/reset", {"token": token, "password": "short"})
    assert short.status_code == 400
    assert site.post("open", "/api/auth/password/reset", {"token": token, "password": "the-new-password"}).status_code == 204
    assert signed_in.get("/api/me").status_code == 401
    assert site.post("open", "/api/auth/login", {"name": "barbara", "password": PASSWORD}).status_code == 401
    site.session("open", "barbara", "the-new-password")
    replayed = site.post("open", "/api/auth/password/reset", {"token": token, "password": "another-password"})
    assert replayed.status_code == 400 and replayed.json()["error"]["code"] == "invalid_token"

    site.post("open", "/api/auth/password/forgot", {"email": "barbara@example.test"}).raise_for_status()
    late = site.link("barbara@example.test", "reset", count=2)
    expire_tokens(site.gateway("open"), user["id"])
    expired = site.post("open", "/api/auth/password/reset", {"token": late, "password": "another-password"})
    assert expired.status_code == 400 and expired.json()["error"]["code"] == "invalid_token"
    assert "the-new-password" not in site.gateway("open").logs() and late not in site.gateway("open").logs()


def test_invitation_rewards_are_credited_once_capped_and_moved_into_the_balance(site: Site) -> None:
    inviter = site.admin("open", "POST", "/api/users", {"name": "ines", "password": PASSWORD}).json()
    ines = site.session("open", "ines")
    invite = ines.get("/api/me/invite").json()
    assert invite["enabled"] is True and invite["link"] == f"{PUBLIC_URL}/#/signup?invite={invite['code']}"
    assert ines.get("/api/me/invite").json()["code"] == invite["code"]  # one code per user

    check = site.gateway("open").url + "/api/auth/signup?invite="
    assert httpx.get(check + invite["code"]).json()["invite_valid"] is True
    assert httpx.get(check + "no-such-code").json()["invite_valid"] is False
    bad = sign_up(site, "open", "otto", "otto@example.test", invite_code="no-such-code")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_invite"
    otto = sign_up(site, "open", "otto", "otto@example.test", invite_code=invite["code"]).json()["user"]
    assert otto["invited_by"] == inviter["id"] and otto["signed_up_at"] is not None and inviter["signed_up_at"] is None
    assert ines.get("/api/me/invite").json()["affiliate_micros"] == 0  # nothing before the address is proven
    site.post("open", "/api/auth/verify", {"token": site.link("otto@example.test", "verify")}).raise_for_status()
    assert ines.get("/api/me/invite").json()["affiliate_micros"] == 1_000_000

    for order in ("order-1", "order-1", "order-2"):  # the first top-up rewards a tenth of it, once
        topped = site.admin("open", "POST", f"/api/users/{otto['id']}/topup",
                            {"amount_micros": 5_000_000, "request_id": order})
        assert topped.status_code == 200, topped.text
    mine = ines.get("/api/me/invite").json()
    assert (mine["affiliate_micros"], mine["invitees"], mine["rewarded_invites"]) == (1_500_000, 1, 1)

    # The cap is one rewarded invitee: the next one earns nothing.
    sign_up(site, "open", "olga", "olga@example.test", invite_code=invite["code"]).raise_for_status()
    site.post("open", "/api/auth/verify", {"token": site.link("olga@example.test", "verify")}).raise_for_status()
    mine = ines.get("/api/me/invite").json()
    assert (mine["affiliate_micros"], mine["invitees"], mine["rewarded_invites"]) == (1_500_000, 2, 1)

    moved = ines.post("/api/me/invite/move", headers={"X-Requested-With": "test"})
    assert moved.status_code == 200 and moved.json()["moved_micros"] == 1_500_000
    assert moved.json()["user"]["balance_micros"] == 1_500_000
    again = ines.post("/api/me/invite/move", headers={"X-Requested-With": "test"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "nothing_to_move"
    ledger = site.admin("open", "GET", f"/api/users/{inviter['id']}/ledger").json()["data"]
    assert [(e["kind"], e["amount_micros"]) for e in ledger] == [("affiliate", 1_500_000)]


def test_invite_only_needs_a_code_and_an_allowed_domain_and_limits_sign_ups_and_resends(site: Site) -> None:
    assert site.admin("invite-only", "POST", "/api/users", {"name": "host", "password": PASSWORD}).status_code == 201
    code = site.session("invite-only", "host").get("/api/me/invite").json()["code"]
    missing = sign_up(site, "invite-only", "ivy", "ivy@example.test")
    assert missing.status_code == 403 and missing.json()["error"]["code"] == "invite_required"
    elsewhere = sign_up(site, "invite-only", "ivy", "ivy@elsewhere.test", invite_code=code)
    assert elsewhere.status_code == 400 and elsewhere.json()["error"]["code"] == "email_not_allowed"

    answers = [sign_up(site, "invite-only", f"ivy{n}", f"ivy{n}@example.test", invite_code=code) for n in range(4)]
    assert [a.status_code for a in answers] == [201, 201, 201, 429]
    assert answers[3].json()["error"]["code"] == "too_many_requests"

    # Within the resend interval (60 s here) a resend is accepted but sends nothing; a reset mail still goes.
    site.link("ivy0@example.test", "verify")
    assert site.post("invite-only", "/api/auth/verify/resend", {"email": "ivy0@example.test"}).status_code == 200
    site.post("invite-only", "/api/auth/password/forgot", {"email": "ivy0@example.test"}).raise_for_status()
    site.link("ivy0@example.test", "reset")
    assert site.mails("ivy0@example.test") == 2


def test_the_admin_sees_the_settings_in_force_without_secrets(site: Site) -> None:
    shown = site.admin("open", "GET", "/api/settings/accounts").json()
    assert shown["signup"]["mode"] == "open" and shown["signup"]["starting_balance_usd"] == 0.5
    assert shown["invitations"]["reward_share_of_first_topup"] == 0.1
    assert shown["mail"] == {"configured": True, "host": "127.0.0.1", "from": "relay@example.test"}
    assert httpx.get(site.gateway("open").url + "/api/settings/accounts").status_code == 401
